"""World-size invariance: 2 ranks x accumulation 1 trains exactly like 1 rank x accumulation 2."""
import pytest

from analysis.runs import read_events
from tests.conftest import run_train


@pytest.mark.e2e
def test_two_ranks_equal_one_rank_with_accumulation(tmp_path):
    common = ["experiment=smoke", "train.max_steps=5", "train.log_every=1", "train.val_every=0",
              "train.precision=fp32"]
    one = run_train(*common, f"hydra.run.dir={tmp_path}/one")
    two = run_train(*common, f"hydra.run.dir={tmp_path}/two", nproc=2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert "accum 2" in one.stdout and "accum 1" in two.stdout
    losses = {k: [e["train_loss"] for e in read_events(tmp_path / k / "metrics.jsonl") if e["event"] == "train"]
              for k in ("one", "two")}
    assert len(losses["one"]) == len(losses["two"]) == 5
    for a, b in zip(losses["one"], losses["two"]):
        assert abs(a - b) < 1e-5, losses
    # Only rank 0 created a run folder and wrote metrics.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
