"""Acceptance: several ranks never race on folders or wandb: torchrun (run and sweep), the SLURM launcher
config (composed; turned into an sbatch script: tests/unit/harness/test_slurm_launcher.py), and a 2-task job on
submitit's local executor."""
import tempfile
from pathlib import Path

import pytest
import yaml

from analysis.runs import read_events
from tests.conftest import REPO, run_train
from tests.support.wandb_records import isolated_wandb_env, offline_runs, read_offline_run

FAST = ["experiment=smoke", "train.max_steps=2", "train.val_every=0", "train.val_tokens=4096", "train.log_every=1",
        "logger=wandb", "logger.mode=offline"]


def scratch_dirs() -> set:
    return {p.name for p in Path(tempfile.gettempdir()).glob("speedrun-rank*")}


@pytest.mark.e2e
def test_torchrun_two_ranks_make_one_folder_and_one_wandb_run(tmp_path, monkeypatch):
    repo_before = {p.name for p in REPO.iterdir()}
    proc = run_train(*FAST, f"hydra.run.dir={tmp_path}/runs/r", nproc=2, env=isolated_wandb_env(tmp_path, monkeypatch))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["r"]
    files = offline_runs(tmp_path)
    assert len(files) == 1 and files[0].parents[2] == tmp_path / "runs" / "r"
    assert read_offline_run(files[0])["config"]["run"]["world_size"] == 2
    assert read_events(tmp_path / "runs" / "r" / "metrics.jsonl")[0]["hardware"]["world_size"] == 2
    assert {p.name for p in REPO.iterdir()} == repo_before  # rank 1 wrote nothing in the working directory


@pytest.mark.e2e
def test_torchrun_sweep_makes_one_folder_and_one_wandb_run_per_job(tmp_path, monkeypatch):
    before = scratch_dirs()
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *FAST, "optim.lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}", nproc=2,
                     env=isolated_wandb_env(tmp_path, monkeypatch))
    assert proc.returncode == 0, proc.stderr[-3000:]  # also: the second job's process group did not hang
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    assert sorted(f.parents[2].name for f in offline_runs(tmp_path)) == ["0", "1"]
    for job in ("0", "1"):
        assert read_events(sweep / job / "metrics.jsonl")[-1]["world_size"] == 2
    assert scratch_dirs() == before  # rank 1's private sweep folder was removed


def compose_hydra(*overrides: str) -> dict:
    proc = run_train("--cfg", "hydra", "--resolve", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)["hydra"]


@pytest.mark.e2e
def test_slurm_launcher_config_composes_to_one_task_per_gpu():
    hydra = compose_hydra("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2",
                          "hydra.sweep.dir=/shared/sweeps/s1")
    launcher = hydra["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (4, 4, 2)
    assert launcher["submitit_folder"] == "/shared/sweeps/s1/.submitit/%j" and launcher["max_num_timeout"] == 0
    assert hydra["output_subdir"] == ".hydra"  # rank0_else, resolved in a rank-0 process


@pytest.mark.e2e
def test_submitit_local_job_with_two_tasks_is_one_run(tmp_path, monkeypatch):
    """The per-task path of hydra/launcher=slurm, on this machine: 2 tasks = 2 ranks of one job (gloo)."""
    sweep = tmp_path / "sweep"
    proc = run_train("-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                     "hydra.launcher.timeout_min=8", *FAST, f"hydra.sweep.dir={sweep}",
                     env=isolated_wandb_env(tmp_path, monkeypatch))
    task_logs = sorted((sweep / ".submitit").glob("*/*_log.*"))
    assert proc.returncode == 0, proc.stderr[-2000:] + "".join(p.read_text()[-1500:] for p in task_logs)
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit", "0", "multirun.yaml"]
    job = sweep / "0"
    assert sorted(p.name for p in job.iterdir()) == [".hydra", ".lock", "config.yaml", "final_weights.pt", "metrics.jsonl",
                                                     "outcome.json", "train.log", "wandb"]
    events = read_events(job / "metrics.jsonl")
    assert events[0]["world_size"] == 2 and events[-1]["event"] == "summary" and events[-1]["world_size"] == 2
    assert len(offline_runs(sweep)) == 1
    outs = {p.name.split("_")[1]: p.read_text() for p in task_logs if p.name.endswith("_log.out")}
    assert "global_rank=1(2)" in outs["1"] and "parameters:" in outs["0"] and "parameters:" not in outs["1"]
    # train.log is rank 0's console: its lines once, nothing from rank 1.
    log = (job / "train.log").read_text()
    assert log.count("parameters:") == 1 and "step:2/2 val_loss:" in log
