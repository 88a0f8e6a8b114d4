"""Every experiment runs on a small machine: `shrink=cpu` keeps the layer lists valid, every bad layer list
is named in one error, and an impossible dense mask is refused at start with the fix."""
import pytest
import torch

import tools.describe as describe
from common.paths import CONFIGS

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_every_experiment_shrinks_to_a_cpu_run(exp):
    """shrink=cpu composes with every experiment: the layer count (and so every layer list) is kept, and
    the masks it needs fit on the CPU's SDPA path."""
    from model.masks import check_start

    full = describe.load([f"experiment={exp}"])
    small = describe.load([f"experiment={exp}", "shrink=cpu", "data=synthetic"])
    assert small.model.n_layer == full.model.n_layer and small.model.no_attn_layers == full.model.no_attn_layers
    assert small.device.value == "cpu" and not small.train.compile and small.train.seq_len == 256
    assert small.model.vocab_size == full.model.vocab_size and small.optim == full.optim
    check_start(small.model, torch.device("cpu"), small.train.micro_batch_seqs, small.train.seq_len)


def test_every_bad_layer_list_is_named_in_one_error():
    with pytest.raises(Exception, match=r"model.no_attn_layers=\[7\] and model.value_embed_layers=\[0, 1, 2, 9, 10, "
                                        r"11\] and model.short_window_layers=\[1, .*\] must list distinct layer "
                                        r"indices in \[0, 2\)"):
        describe.load(["experiment=record20_sub3min", "model.n_layer=2"])


def test_a_mask_that_cannot_fit_is_refused_at_start_naming_the_fix(tmp_path):
    from tests.support.inprocess import user_error

    msg = user_error(tmp_path, "experiment=record20_sub3min", "device=cpu", "data=synthetic")
    assert "needs a 1 x 65536 x 65536 mask on the SDPA path" in msg and "shrink=cpu" in msg
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before any data or compute
