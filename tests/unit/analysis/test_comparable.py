"""Issue 26, items 3a and 5: sweep folders and `outputs/multirun/X/*` as compare's and significance's runs
(analysis/runs.py expand_runs), runs judged only against what applies to them (analysis/comparable.py),
compare's runs named by their overrides, and one line style per seed in summarize's plot."""
import json

import pytest
from omegaconf import OmegaConf

from analysis import compare, significance, summarize
from analysis.comparable import SETUP_KEYS, differences, setup_of_record, target_problems
from analysis.records import experiments_with_reference
from analysis.runs import expand_runs, run_folders
from tests.unit.analysis.test_summarize import make_run

# what `python train.py experiment=smoke` records in config.yaml, in the keys that matter here
SMOKE = {"model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 512},
         "data": {"dir": "outputs/data/synthetic_v511", "synthetic": {"vocab": 511, "bos_token": 511}},
         "train": {"seq_len": 128, "global_batch_tokens": 4096}, "experiment": "smoke", "reference": None}
# ... and `experiment=record20_sub3min data.dir=DIR` (FineWeb shards)
RECORD20 = {"model": {"n_layer": 12, "n_head": 6, "n_embd": 768, "vocab_size": 50257},
            "data": {"dir": "/data/fineweb10B", "synthetic": None},
            "train": {"seq_len": 65536, "global_batch_tokens": 524288}, "experiment": "record20_sub3min",
            "reference": {"track": 1, "val_loss": 3.2785}}


def train_run(folder, config, seed, losses, overrides=("experiment=smoke",), every=50):
    """A finished run folder as train.py writes it: config.yaml, .hydra/overrides.yaml, metrics.jsonl."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save({**config, "seed": seed, "logger": {"name": "none"}}, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create([*overrides, f"seed={seed}", "hydra.job.num=0"]), folder / ".hydra/overrides.yaml")
    events = [{"event": "val", "step": i * every, "tokens": i * every * 4096, "train_time_ms": i * every * 10.0,
               "val_loss": v} for i, v in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in
                                                  [*events, {"event": "summary", "final_val_loss": losses[-1]}]))
    return folder


def smoke_sweep(root, finals=(1.2864, 1.2870)):
    """A sweep folder like `train.py -m experiment=smoke seed=0,1`: job folders 0, 1 and Hydra's multirun.yaml."""
    for seed, final in enumerate(finals):
        train_run(root / str(seed), SMOKE, seed, [6.3, 2.0, final])
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    return root


def test_a_sweep_folder_or_its_glob_is_its_jobs_and_multirun_yaml_is_skipped(tmp_path, capsys):
    sweep = smoke_sweep(tmp_path / "sweep")
    glob = sorted(map(str, sweep.iterdir()))  # what the shell makes of outputs/multirun/X/*
    assert expand_runs(glob) == ([str(sweep / "0"), str(sweep / "1")], [str(sweep / "multirun.yaml")])
    assert expand_runs([str(sweep)])[0] == [str(sweep / "0"), str(sweep / "1")]
    assert significance.main(["--rule", "track3", "--target", "1.3", *glob]) == 0
    out = capsys.readouterr().out
    assert "note: skipped 1 file(s) that hold no run" in out and "multirun.yaml" in out
    assert "n=2 mean=1.28670" in out
    assert significance.main(["--rule", "track3", "--target", "1.3", str(sweep)]) == 0
    assert "n=2 mean=1.28670" in capsys.readouterr().out
    assert compare.main([*glob, "--record", "record20_sub3min", "--force", "--out", str(tmp_path / "c.png")]) == 0
    assert "skipped 1 file(s)" in capsys.readouterr().out
    assert compare.main([str(sweep), "--record", "record20_sub3min", "--force", "--out", str(tmp_path / "c.png")]) == 0


def test_a_folder_without_runs_is_one_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert significance.main([str(tmp_path / "empty")]) == 2
    assert compare.main([str(tmp_path / "empty"), "--record", "record20_sub3min"]) == 2
    assert capsys.readouterr().err.count("no metrics.jsonl under") == 2
    with pytest.raises(ValueError, match="pass run folders or sweep folders"):
        run_folders(tmp_path / "empty")


def test_the_target_applies_only_on_fineweb_with_gpt2s_vocabulary(tmp_path, capsys):
    sweep = smoke_sweep(tmp_path / "sweep")
    runs = [str(sweep / "0"), str(sweep / "1")]
    assert significance.main(runs) == 2  # today: "SIGNIFICANT - mean 1.2867 < 3.28"
    err = capsys.readouterr().err
    assert "refusing to judge these runs against 3.28, a FineWeb loss with GPT-2's 50257-token vocabulary" in err
    assert f"{runs[0]}, {runs[1]}: data synthetic, model.vocab_size 512" in err and "--force" in err
    assert significance.main([*runs, "--force"]) == 0
    assert "WARNING (--force):" in capsys.readouterr().out
    assert significance.main([*runs, "--target", "1.3"]) == 0  # a target of your own is yours
    assert significance.main(["--rule", "track3", *runs]) == 2
    fineweb = [str(train_run(tmp_path / f"fw{s}", RECORD20, s, [10.9, 3.3, 3.27 + s / 1000])) for s in range(3)]
    assert target_problems(fineweb) == []
    assert significance.main(fineweb) == 0


def test_compare_refuses_a_run_unlike_the_record(tmp_path, capsys):
    smoke = str(train_run(tmp_path / "smoke", SMOKE, 0, [6.3, 2.0, 1.2864]))
    assert compare.main([smoke, "--record", "record20_sub3min"]) == 2  # today: time_ratio 0.01862
    err = capsys.readouterr().err
    assert "refusing to compare these runs with record20_sub3min, which they are not like" in err
    for diff in ("data synthetic vs fineweb", "model.vocab_size 512 vs 50257", "model.n_layer 2 vs 12",
                 "model.n_head 2 vs 6", "model.n_embd 64 vs 768", "train.seq_len 128 vs 65536",
                 "train.global_batch_tokens 4096 vs 524288"):
        assert diff in err
    assert compare.main([smoke, "--record", "record20_sub3min", "--force", "--out", str(tmp_path / "c.png")]) == 0
    assert "WARNING (--force): " in capsys.readouterr().out
    like = str(train_run(tmp_path / "like", RECORD20, 0, [10.9, 3.5, 3.279], every=700))
    assert differences([like], "record20_sub3min") == []
    assert compare.main([like, "--record", "record20_sub3min", "--out", str(tmp_path / "c.png")]) == 0
    small = str(train_run(tmp_path / "small", {**RECORD20, "model": {**RECORD20["model"], "n_layer": 4}}, 0,
                          [10.9, 3.5]))
    assert differences([small], "record20_sub3min") == [f"{small}: model.n_layer 4 vs 12"]
    track3 = str(train_run(tmp_path / "t3", {**RECORD20, "reference": {"track": 3}}, 0, [10.9, 3.5]))
    assert differences([track3], "record20_sub3min") == [f"{track3}: track 3 vs 1"]
    assert differences(["track3_muon"], "record20_sub3min") == [
        "track3_muon: train.seq_len 1024 vs 65536, track 3 vs 1"]


def test_pairwise_refuses_runs_unlike_the_published_result(tmp_path, capsys):
    sweep = smoke_sweep(tmp_path / "sweep")
    assert significance.main(["--rule", "pairwise", "--new", str(sweep), "--old-record", "track3_muon",
                              "--new-steps", "3200"]) == 2
    assert "refusing to judge these runs against track3_muon" in capsys.readouterr().err


@pytest.mark.parametrize("experiment", experiments_with_reference())
def test_every_record_states_what_it_is_compared_on(experiment):
    """A key an experiment file does not state would go unchecked: each record states all of them."""
    setup = setup_of_record(experiment)
    assert None not in setup.values() and set(setup) == set(SETUP_KEYS)
    assert setup["data"] == "fineweb" and setup["model.vocab_size"] == 50257


def test_compare_names_runs_by_their_overrides(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "sweep"
    for job, lr in enumerate((1e-3, 3e-3)):
        train_run(sweep / str(job), SMOKE, 0, [6.3, 2.0, 1.3], overrides=("experiment=smoke", f"optim.lr={lr}"))
    for job, seed in enumerate((0, 1), start=2):
        train_run(sweep / str(job), SMOKE, seed, [6.3, 2.0, 1.3], overrides=("experiment=smoke", "optim.lr=0.01"))
    bare = tmp_path / "2026-01-02_03-04-05"
    train_run(bare, SMOKE, 0, [6.3, 2.0, 1.3], overrides=())  # `python train.py`: no overrides but the seed
    legend = []
    real_plot = compare.plot
    monkeypatch.setattr(compare, "plot", lambda runs, *a: legend.extend(r.name for r in runs) or real_plot(runs, *a))
    out = tmp_path / "c.png"
    assert compare.main([str(sweep), str(bare), "--record", "record20_sub3min", "--force", "--out", str(out)]) == 0
    names = ["experiment=smoke optim.lr=0.001", "experiment=smoke optim.lr=0.003",
             "experiment=smoke optim.lr=0.01 seed=0", "experiment=smoke optim.lr=0.01 seed=1", bare.name]
    assert legend == names  # not the job numbers 0, 1, 2, 3
    text = capsys.readouterr().out
    assert all(f"\n{name} " in text for name in names)  # the report's rows


def test_summary_plot_gives_each_seed_its_own_style(tmp_path):
    make_run(tmp_path / "a", 0.001, 1, [6.0, 4.0, 3.5])   # alone in its group: seed 1 was drawn solid
    make_run(tmp_path / "b", 0.003, 0, [6.0, 3.2, 3.0])
    make_run(tmp_path / "c", 0.003, 1, [6.0, 3.6, 3.1])
    runs = [summarize.load_run(p, p.name, None) for p in summarize.find_runs([tmp_path])]
    fig = summarize.plot(runs, summarize.vary(runs), tmp_path)
    style = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines() if line.get_gid() == "run"}
    assert style == {"optim.lr=0.001 seed=1": "--", "optim.lr=0.003 seed=0": "-", "optim.lr=0.003 seed=1": "--"}
