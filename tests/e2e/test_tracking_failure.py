"""Acceptance: wandb that cannot start (no login; no network) costs one warning line, never the run."""
import pytest

from analysis.runs import read_events
from tests.conftest import run_train
from tests.support.wandb_records import isolated_wandb_env

FAST = ["experiment=smoke", "train.max_steps=6", "train.val_every=3", "train.val_tokens=4096", "train.log_every=2"]


@pytest.mark.e2e
@pytest.mark.parametrize("failure", ["no_login", "no_network"])
def test_wandb_failure_warns_once_and_training_completes(tmp_path, monkeypatch, failure):
    env = isolated_wandb_env(tmp_path, monkeypatch)
    if failure == "no_network":  # a key, but the server refuses connections (the port is closed)
        env.update(WANDB_API_KEY="0" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    run_dir = tmp_path / "run"
    proc = run_train(*FAST, "logger=wandb", "logger.mode=online", "logger.init_timeout=5", f"hydra.run.dir={run_dir}",
                     env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(ours) == 1, proc.stderr
    assert ours[0].startswith("warning: wandb could not start (") and str(run_dir / "metrics.jsonl") in ours[0]
    assert "Traceback" not in proc.stderr
    events = read_events(run_dir / "metrics.jsonl")
    assert [e["event"] for e in events] == ["run", "val", "train", "val", "train", "train", "val", "summary"]
    assert events[-1]["steps"] == 6 and "step:6/6 val_loss:" in proc.stdout
