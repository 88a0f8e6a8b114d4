"""Every record config trains 5 steps on CPU through train.py, shrunk (2-4 layers x 64, 512-token
vocabulary, 128-token sequences, synthetic documents of ~32 tokens that start with token 511, which
plays <|endoftext|> so document masking is exercised); plus the time-to-target early stop."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.telemetry.metrics import read_metrics
from tests.conftest import run_train

SHRINK = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "device=cpu", "train.compile=false",
          "train.max_steps=5", "train.val_every=5", "train.val_tokens=512", "train.seq_len=128",
          "train.micro_batch_seqs=2", "train.global_batch_tokens=512", "train.log_every=1", "data=synthetic",
          "data.synthetic.train_tokens=20000", "data.synthetic.val_tokens=4096", "data.prefetch=false",
          "model.vocab_size=512", "model.bos_token=511", "data.synthetic.vocab=511", "data.synthetic.bos_token=511",
          "data.synthetic.mean_doc_len=32"]
PER_RECORD = {  # layer lists must fit the shrunk depth; windows shorter than the 128-token sequences
    "record12_flexattn": ["model.window_size=48"],
    "record20_sub3min": ["model.n_layer=4", "model.no_attn_layers=[2]", "model.value_embed_tables=2",
                         "model.value_embed_layers=[0,3]", "model.short_window_layers=[1]",
                         "model.window_size=64", "model.window_block=16"],
}
RECORDS = ["record02_adamw", "record04_muon", "record05_modernarch", "record08_untie", "record09_shortcuts",
           "record12_flexattn", "record20_sub3min"]


# Three train.py processes, run side by side: records 2-9 share their shrink overrides and run as one
# Hydra multirun (one interpreter and torch import for five records); record 12 runs twice, with an
# unreachable target and with one every validation meets (time-to-target stop); record 20 alone.
GROUPS = {
    "records_2_to_9": ["experiment=" + ",".join(RECORDS[:5]), "train.stop_at_val_loss=0.01"],
    "record12": ["experiment=record12_flexattn", "train.stop_at_val_loss=0.01,50", *PER_RECORD["record12_flexattn"]],
    "record20": ["experiment=record20_sub3min", *PER_RECORD["record20_sub3min"]],
}


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

    def launch(name):
        proc = run_train("-m", *SHRINK, *GROUPS[name], f"data.dir={data_dir}", f"hydra.sweep.dir={root / name}",
                         env={"OMP_NUM_THREADS": "1"}, timeout=600)
        return name, proc

    with ThreadPoolExecutor(max_workers=len(GROUPS)) as pool:
        procs = dict(pool.map(launch, GROUPS))
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
    events = read_metrics(run_dir / "metrics.jsonl")
    assert events and events[-1]["event"] == "summary", err
    return events


@pytest.mark.e2e
@pytest.mark.parametrize("rec", RECORDS)
def test_record_runs_five_steps_on_cpu(rec, runs):
    stop = 0.01 if rec != "record20_sub3min" else None  # 0.01: an unreachable target must not stop the run
    events = events_of(runs, rec, stop)
    vals = [e for e in events if e["event"] == "val"]
    trains = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in vals] == [0, 5] and [e["step"] for e in trains] == [1, 2, 3, 4, 5]
    assert all(0 < e["train_loss"] < 12 for e in trains) and vals[-1]["val_loss"] < vals[0]["val_loss"]
    assert events[-1]["steps"] == 5 and events[-1]["stopped_at_val_loss"] is False


@pytest.mark.e2e
def test_stop_at_val_loss_ends_a_time_to_target_run(runs):
    # a target every validation meets: the run stops at its first validation, before any training step
    events = events_of(runs, "record12_flexattn", 50.0)
    assert [e["event"] for e in events] == ["run", "val", "summary"]  # "run": git commit and hardware
    assert events[-1]["steps"] == 0 and events[-1]["stopped_at_val_loss"] is True
