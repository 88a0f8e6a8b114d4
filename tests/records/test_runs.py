"""Every record config (track 1) trains 5 steps on CPU through train.py, shrunk (2-4 layers x 64, 512-token
vocabulary, 128-token sequences, synthetic documents of ~32 tokens that start with token 511, which
plays <|endoftext|> so document masking is exercised); plus the time-to-target early stop. Each
record's own shrink (tests/records/expected.py's Run) comes on top of SHRINK."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from analysis.records import experiments_with_reference
from analysis.runs import read_events
from tests.conftest import run_train
from tests.records.expected import EXPECTED

SHRINK = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "device=cpu", "train.compile=false",
          "train.max_steps=5", "train.val_every=5", "train.val_tokens=512", "train.seq_len=128",
          "train.micro_batch_seqs=2", "train.global_batch_tokens=512", "train.log_every=1", "data=synthetic",
          "data.synthetic.train_tokens=20000", "data.synthetic.val_tokens=4096", "data.prefetch=false",
          "model.vocab_size=512", "model.bos_token=511", "data.synthetic.vocab=511", "data.synthetic.bos_token=511",
          "data.synthetic.mean_doc_len=32"]
RECORDS = experiments_with_reference(track=1)
UNREACHABLE, MET = 0.01, 50.0  # val-loss targets: 0.01 must not stop a run; every validation meets 50


def run_groups() -> dict[str, list[str]]:
    """train.py processes, run side by side: the records without overrides of their own share one Hydra
    multirun (one interpreter and torch import for all of them); each other record runs alone, the one
    that checks the time-to-target stop twice (an unreachable target and one every validation meets)."""
    shared = [r for r in RECORDS if not EXPECTED[r].run.overrides and not EXPECTED[r].run.time_to_target]
    out = {"shared": ["experiment=" + ",".join(shared), f"train.stop_at_val_loss={UNREACHABLE}"]} if shared else {}
    for rec in RECORDS:
        run = EXPECTED[rec].run
        if rec not in shared:
            stops = f"{UNREACHABLE},{MET}" if run.time_to_target else f"{UNREACHABLE}"
            out[rec] = [f"experiment={rec}", f"train.stop_at_val_loss={stops}", *run.overrides]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(experiment, stop_at_val_loss) -> (run folder, stderr of its process)."""
    from omegaconf import OmegaConf

    from data.config import SyntheticConfig
    from data.synthetic import ensure_synthetic_shards

    root = tmp_path_factory.mktemp("record_runs")
    data_dir = root / "synthetic"  # written once here, so the concurrent runs only read it
    ensure_synthetic_shards(data_dir, SyntheticConfig(vocab=511, bos_token=511, train_tokens=20000,
                                                      val_tokens=4096, mean_doc_len=32))

    plan = run_groups()

    def launch(name):
        proc = run_train("-m", *SHRINK, *plan[name], f"data.dir={data_dir}", f"hydra.sweep.dir={root / name}",
                         env={"OMP_NUM_THREADS": "1"}, timeout=600)
        return name, proc

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        procs = dict(pool.map(launch, plan))
    found = {}
    for name, proc in procs.items():
        for cfg_file in sorted((root / name).glob("*/config.yaml")):
            cfg = OmegaConf.load(cfg_file)
            found[(cfg.experiment, cfg.train.stop_at_val_loss)] = (cfg_file.parent, proc.stderr[-3000:])
        if not any((root / name).glob("*/config.yaml")):
            found[(name, None)] = (None, proc.stderr[-3000:])
    return found


def events_of(runs, rec, stop):
    assert (rec, stop) in runs, "run missing; stderr of the runs:\n" + "\n".join(e for _, e in runs.values())
    run_dir, err = runs[(rec, stop)]
    events = read_events(run_dir / "metrics.jsonl")
    assert events and events[-1]["event"] == "summary", err
    return events


@pytest.mark.e2e
@pytest.mark.parametrize("rec", RECORDS)
def test_record_runs_five_steps_on_cpu(rec, runs):
    events = events_of(runs, rec, UNREACHABLE)  # an unreachable target must not stop the run
    vals = [e for e in events if e["event"] == "val"]
    trains = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in vals] == [0, 5] and [e["step"] for e in trains] == [1, 2, 3, 4, 5]
    assert all(0 < e["train_loss"] < 12 for e in trains) and vals[-1]["val_loss"] < vals[0]["val_loss"]
    assert events[-1]["steps"] == 5 and events[-1]["stopped_at_val_loss"] is False


@pytest.mark.e2e
def test_stop_at_val_loss_ends_a_time_to_target_run(runs):
    # a target every validation meets: the run stops at its first validation, before any training step
    checked = [r for r in RECORDS if EXPECTED[r].run.time_to_target]
    assert checked, "no record's Run in tests/records/expected.py sets time_to_target"
    events = events_of(runs, checked[0], MET)
    assert [e["event"] for e in events] == ["run", "val", "summary"]  # "run": git commit and hardware
    assert events[-1]["steps"] == 0 and events[-1]["stopped_at_val_loss"] is True
