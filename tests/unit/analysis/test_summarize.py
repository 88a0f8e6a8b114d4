"""analysis/summarize.py on hand-made run folders with known numbers (the 2x2 sweep test runs it on real runs)."""
import csv
import json
import statistics

import pytest
from omegaconf import OmegaConf

import analysis.summarize as summarize


def make_run(path, lr, seed, curve, model="tiny", overrides=(), complete=True, target=3.28):
    path.mkdir(parents=True)
    OmegaConf.save({"model": {"n_layer": 2 if model == "tiny" else 4}, "optim": {"lr": lr}, "seed": seed,
                    "train": {"target_val_loss": target}, "experiment": "smoke"}, path / "config.yaml")
    (path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create([f"optim.lr={lr}", f"seed={seed}", *overrides]), path / ".hydra" / "overrides.yaml")
    events = [{"event": "run", "git_commit": "abc"}]
    events += [{"event": "val", "step": 10 * i, "tokens": 1000 * i, "train_time_ms": 500.0 * i, "val_loss": v}
               for i, v in enumerate(curve)]
    if complete:
        n = len(curve) - 1
        events.append({"event": "summary", "final_val_loss": curve[-1], "tokens": 1000 * n, "train_time_ms": 500.0 * n})
    (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    make_run(root / "0", 0.001, 0, [6.0, 4.0, 3.5])
    make_run(root / "1", 0.001, 1, [6.0, 3.9, 3.3])
    make_run(root / "2", 0.003, 0, [6.0, 3.2, 3.0])  # reaches 3.28 at step 10 (0.5 s)
    make_run(root / "3", 0.003, 1, [6.0, 3.6, 3.1])  # ... at step 20 (1.0 s)
    return root


def test_rows_groups_and_files(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    summarize.main([str(sweep), "--out", str(out)])
    text = capsys.readouterr().out
    assert "| run | optim.lr | seed | final_val_loss |" in text  # only the parameters that differ
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert [r["run"] for r in rows] == ["sweep/0", "sweep/1", "sweep/2", "sweep/3"]
    assert [r["steps_to_target"] for r in rows] == ["", "", "10", "20"]
    groups = list(csv.DictReader(open(out / "groups.csv")))
    assert [g["optim.lr"] for g in groups] == ["0.001", "0.003"] and [g["runs"] for g in groups] == ["2", "2"]
    assert float(groups[0]["final_val_loss_mean"]) == pytest.approx(3.4)
    assert float(groups[0]["final_val_loss_std"]) == pytest.approx(statistics.stdev([3.5, 3.3]))
    assert float(groups[1]["time_to_target_s_mean"]) == pytest.approx(0.75)
    assert f"3.4000 ± {statistics.stdev([3.5, 3.3]):.4f}" in text and "| 0.003 | 2 | 0,1 |" in text
    assert "0/2" in text and "2/2" in text
    series = list(csv.DictReader(open(out / "val_loss_vs_time.csv")))
    assert len({s["run"] for s in series}) == 4 and len(series) == 12
    assert (out / "val_loss_vs_time.png").stat().st_size > 10_000
    assert "| sweep/3 | 0.003 | 1 | 3.1000 |" in (out / "summary.md").read_text()


def test_plot_has_one_line_per_run(sweep, tmp_path):
    runs = [summarize.load_run(p, p.name, None) for p in summarize.find_runs([sweep])]
    names = summarize.vary(runs)
    fig = summarize.plot(runs, names, tmp_path)
    lines = [line for line in fig.axes[0].get_lines() if line.get_gid() == "run"]
    assert len(lines) == 4 and [len(line.get_xdata()) for line in lines] == [3, 3, 3, 3]
    assert [line.get_gid() for line in fig.axes[0].get_lines()].count("target") == 1  # 3.28 lies in range


def test_group_override_is_one_column_and_incomplete_runs_are_flagged(tmp_path, capsys):
    make_run(tmp_path / "a", 0.001, 0, [6.0, 4.0], model="tiny", overrides=["model=tiny"])
    make_run(tmp_path / "b", 0.001, 0, [6.0, 3.0, 2.9], model="small", overrides=["model=small"], complete=False)
    summarize.main([str(tmp_path / "a"), str(tmp_path / "b")])  # the command line: test_tracking_sweep.py
    out = capsys.readouterr().out
    assert "| run | model | final_val_loss |" in out and "model.n_layer" not in out
    assert "/b | small | 2.9000 |" in out and "| incomplete |" in out


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as err:  # exit 1, the message on stderr
        summarize.main([str(tmp_path)])
    assert str(err.value).startswith("error: no metrics.jsonl under")
