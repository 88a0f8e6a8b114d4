"""Records shrunk with `shrink=cpu` train on CPU through the real loop."""
import math

import pytest
import torch


@pytest.mark.e2e
@pytest.mark.parametrize("exp", ["record20_sub3min", "track3_muon"])
def test_shrunk_records_train_on_cpu(exp, tmp_path):
    import train
    from harness.process import distributed as D
    from tests.support.inprocess import compose_config

    cfg = compose_config(f"experiment={exp}", "shrink=cpu", "data=synthetic", "train.max_steps=2", "train.val_every=0",
                         "train.val_tokens=512")
    summary = train.train(cfg, D.RankInfo(0, 0, 1, torch.device("cpu")), tmp_path)
    assert summary["steps"] == 2 and math.isfinite(summary["final_val_loss"])
