"""Acceptance: a 2 lr x 2 seed Hydra multirun of the smoke experiment with offline wandb, then summarize.py."""
import csv
import subprocess

import pytest
from omegaconf import OmegaConf

from analysis.runs import read_events
from tests.conftest import REPO, run_script, run_train
from tests.support.wandb_records import isolated_wandb_env, offline_runs, read_offline_run

FAST = ["experiment=smoke", "train.max_steps=6", "train.val_every=3", "train.val_tokens=4096", "train.log_every=2"]


def git_head():
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.mark.e2e
def test_two_lrs_two_seeds_offline_wandb_and_summary(tmp_path, monkeypatch):
    repo_before = {p.name for p in REPO.iterdir()}
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *FAST, "logger=wandb", "logger.mode=offline", "train.target_val_loss=6.2",
                     "optim.lr=1e-3,3e-3", "seed=0,1", f"hydra.sweep.dir={sweep}", env=isolated_wandb_env(tmp_path, monkeypatch))
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Four unique job folders, each complete.
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"] and (sweep / "multirun.yaml").is_file()
    expected = [("0.001", "0"), ("0.001", "1"), ("0.003", "0"), ("0.003", "1")]
    for job, (lr, seed) in zip(jobs, expected):
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert f"optim.lr={lr}" in overrides and f"seed={seed}" in overrides
        events = read_events(job / "metrics.jsonl")
        assert events[0]["event"] == "run" and events[0]["git_commit"] == git_head()
        assert [e["step"] for e in events if e["event"] == "val"] == [0, 3, 6]
        assert events[-1]["event"] == "summary" and events[-1]["target_val_loss"] == 6.2

    # Four offline wandb runs, one in each job folder, grouped by the sweep.
    files = offline_runs(sweep)
    assert len(files) == 4 and sorted(f.parents[2].name for f in files) == ["0", "1", "2", "3"]
    records = {f.parents[2].name: read_offline_run(f) for f in files}
    assert {r["run"]["group"] for r in records.values()} == {"smoke-sweep"}
    assert len({r["run"]["name"] for r in records.values()}) == 4
    for job, (lr, seed) in zip(jobs, expected):
        rec, summary = records[job.name], read_events(job / "metrics.jsonl")[-1]
        assert rec["config"]["optim"]["lr"] == float(lr) and rec["config"]["seed"] == int(seed)
        assert rec["config"]["run"]["git_commit"] == git_head() and rec["config"]["run"]["world_size"] == 1
        assert rec["metrics"]["val/loss"] == "train_time_ms" and rec["metrics"]["val_vs_tokens/loss"] == "tokens"
        val_rows = [h for h in rec["history"] if "val/loss" in h]
        assert [(h["_step"], h["tokens"]) for h in val_rows] == [(0, 0), (3, 12288), (6, 24576)]
        assert all("train_time_ms" in h for h in val_rows)
        assert rec["summary"]["final_val_loss"] == summary["final_val_loss"]
        assert rec["summary"]["target_val_loss_step"] == summary["target_val_loss_step"] is not None
        assert rec["summary"]["target_val_loss_train_time_ms"] == summary["target_val_loss_train_time_ms"]

    # summarize.py: one row per run, mean +- std per lr, the plot and its series.
    out = tmp_path / "report"
    done = run_script("analysis.summarize", str(sweep), "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert [(r["optim.lr"], r["seed"]) for r in rows] == expected
    groups = list(csv.DictReader(open(out / "groups.csv")))
    assert [(g["optim.lr"], g["final_val_loss_n"]) for g in groups] == [("0.001", "2"), ("0.003", "2")]
    assert done.stdout.count(" ± ") >= 4 and "| 0.003 | 2 | 0,1 |" in done.stdout
    series = list(csv.DictReader(open(out / "val_loss_vs_time.csv")))
    assert len({s["run"] for s in series}) == 4 and len(series) == 4 * 3
    assert (out / "val_loss_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    print(done.stdout)  # the table, for the record (pytest -s)

    assert {p.name for p in REPO.iterdir()} == repo_before  # nothing written into the checkout
