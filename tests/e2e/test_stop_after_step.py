"""train.stop_after_step: a prefix of a run is that run's first N steps (same lr schedule, same losses),
ends with a validation at N and a summary saying it stopped early; with a final checkpoint it resumes
into the full run."""
import pytest

from harness.config.schema import ConfigError
from tests.conftest import run_train
from tests.support.inprocess import events, run

pytestmark = pytest.mark.e2e  # every test runs the training loop in-process (integration)

STEPS = ["train.max_steps=12", "train.val_every=5", "train.warmdown_frac=0.5", "checkpoint.final=true"]


@pytest.fixture(scope="module")
def full_and_prefix(tmp_path_factory):
    root = tmp_path_factory.mktemp("stop_after")
    run(root / "full", *STEPS)
    summary = run(root / "prefix", *STEPS, "train.stop_after_step=8")
    return root, summary


def test_prefix_is_the_full_runs_first_steps(full_and_prefix):
    root, summary = full_and_prefix
    full, prefix = events(root / "full"), events(root / "prefix")
    trains = [e for e in prefix if e["event"] == "train"]
    assert [e["step"] for e in trains] == list(range(1, 9))
    # same lr (the 12-step schedule's warmdown starts after step 7) and bit-identical losses
    assert trains == [e for e in full if e["event"] == "train" and e["step"] <= 8]
    assert trains[-1]["lr_factor"] < trains[4]["lr_factor"]
    vals = [e for e in prefix if e["event"] == "val"]
    assert [e["step"] for e in vals] == [0, 5, 8]  # the final validation at N
    assert vals[:2] == [e for e in full if e["event"] == "val" and e["step"] <= 5]
    assert summary["steps"] == 8 and summary["stopped_early"] == "train.stop_after_step=8 of max_steps=12"
    assert "stopped_early" not in events(root / "full")[-1]


def test_resuming_a_prefix_without_the_stop_finishes_the_full_run(full_and_prefix):
    root, _ = full_and_prefix
    summary = run(root / "prefix", *STEPS)  # the final checkpoint at step 8, then steps 9..12
    full = events(root / "full")
    tail = [e for e in events(root / "prefix") if e["event"] == "train" and e["step"] > 8]
    assert tail == [e for e in full if e["event"] == "train" and e["step"] > 8]
    assert summary["steps"] == 12 and "stopped_early" not in summary
    assert summary["final_val_loss"] == full[-1]["final_val_loss"]


def test_stop_after_step_out_of_range_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train.stop_after_step must lie in \[0, train.max_steps=12\]"):
        run(tmp_path, *STEPS, "train.stop_after_step=13")
    run(tmp_path / "resumed", *STEPS, "train.stop_after_step=2")
    with pytest.raises(ConfigError, match="train.stop_after_step=1 is before step 2, where this run resumes"):
        run(tmp_path / "resumed", *STEPS, "train.stop_after_step=1")


@pytest.mark.e2e
def test_train_py_stops_early_with_exit_code_0(tmp_path):
    proc = run_train("experiment=smoke", "train.max_steps=20", "train.stop_after_step=3", "train.val_tokens=8192",
                     f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step:3/20 val_loss:" in proc.stdout
    assert "stopped early after step 3 of 20 (train.stop_after_step)" in proc.stdout
