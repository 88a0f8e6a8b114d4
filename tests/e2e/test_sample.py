"""Trained weights back from a run or checkpoint folder (inference/weights.py), and inference.sample: the
sampling loop on stub models, and the CLI on a smoke run (synthetic token ids: no tokenizer needed)."""
import pytest
import torch
from omegaconf import OmegaConf

from inference import sample
from inference.sample import generate
from inference.weights import WEIGHTS_FILE, WeightsError, load_trained
from tests.support.inprocess import SMOKE, compose_config, run

pytestmark = pytest.mark.e2e  # the tests sample from a model trained in-process by the fixture (integration)

V = 10


class NextToken:
    """Logits favouring (last token + 1) mod V by `margin` nats, with padded head rows V..V+5 that would
    win if they were ever sampled."""

    def __init__(self, margin=20.0):
        self.margin = margin

    def __call__(self, idx):
        logits = torch.zeros(*idx.shape, V + 6)
        logits.scatter_(-1, ((idx + 1) % V).unsqueeze(-1), self.margin)
        logits[..., V:] = 100.0
        return logits


def test_greedy_and_top1_follow_the_model_and_never_pick_padded_rows():
    prompt = torch.tensor([[3], [7]])
    greedy = generate(NextToken(), prompt, 5, vocab_size=V, block_size=4, temperature=0)
    assert greedy.tolist() == [[3, 4, 5, 6, 7, 8], [7, 8, 9, 0, 1, 2]]
    top1 = generate(NextToken(margin=0.5), prompt, 5, vocab_size=V, block_size=4, top_k=1,
                    generator=torch.Generator().manual_seed(0))
    assert top1.tolist() == greedy.tolist()


def test_sampling_is_seeded_and_stops_at_the_stop_token():
    weak = NextToken(margin=0.5)  # nearly uniform: samples differ between seeds
    draw = lambda seed: generate(weak, torch.zeros(4, 1, dtype=torch.long), 30, vocab_size=V, block_size=8,  # noqa: E731
                                 generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    out = generate(NextToken(), torch.tensor([[5]]), 50, vocab_size=V, block_size=8, temperature=0, stop_token=9)
    assert out.tolist() == [[5, 6, 7, 8, 9]]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A 4-step smoke run with a checkpoint at step 2, its config.yaml written as train.py's main() does."""
    run_dir = tmp_path_factory.mktemp("smoke")
    overrides = ["train.max_steps=4", "train.val_every=0", "checkpoint.every=2"]
    run(run_dir, *overrides)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(compose_config(*SMOKE, *overrides))))
    return run_dir


def test_weights_load_from_the_run_folder_a_checkpoint_or_the_file(smoke_run):
    final = load_trained(smoke_run)
    assert final.step == 4 and final.source == str(smoke_run / WEIGHTS_FILE) and final.bos_token == 511
    assert load_trained(smoke_run / WEIGHTS_FILE).step == 4
    ckpt = load_trained(smoke_run / "checkpoints" / "step_000002")
    assert ckpt.step == 2 and ckpt.synthetic and not ckpt.reads_text and ckpt.model.cfg == final.model.cfg
    assert not all(torch.equal(a, b) for a, b in zip(ckpt.model.parameters(), final.model.parameters()))
    (smoke_run / WEIGHTS_FILE).rename(smoke_run / "moved.pt")
    try:  # a run folder without final weights: its newest checkpoint
        newest = sorted((smoke_run / "checkpoints").glob("step_*"))[-1]
        assert load_trained(smoke_run).source == str(newest / "model.pt") and newest.name == "step_000004"
    finally:
        (smoke_run / "moved.pt").rename(smoke_run / WEIGHTS_FILE)


def test_unusable_paths_are_one_line_errors(smoke_run, tmp_path):
    with pytest.raises(WeightsError, match="no such file or folder; pass a run folder"):
        load_trained(tmp_path / "nothing")
    with pytest.raises(WeightsError, match=f"holds no {WEIGHTS_FILE} and no complete checkpoint"):
        load_trained(tmp_path)
    (tmp_path / "config.yaml").write_text((smoke_run / "config.yaml").read_text())
    torch.save({"some": "dict"}, tmp_path / WEIGHTS_FILE)
    with pytest.raises(WeightsError, match="is not a speedrun weights file"):
        load_trained(tmp_path)
    bad = tmp_path / "config.yaml"
    bad.write_text(bad.read_text().replace("n_layer: 2", "n_layer: 3"))
    torch.save(torch.load(smoke_run / WEIGHTS_FILE, weights_only=True), tmp_path / WEIGHTS_FILE)
    with pytest.raises(WeightsError, match="the weights do not fit the model its config describes"):
        load_trained(tmp_path)


def test_sample_cli_prints_token_ids_for_a_synthetic_model(smoke_run, capsys):
    assert sample.main([str(smoke_run), "--prompt", "3 17 42", "--max-new-tokens", "8", "--num-samples", "2",
                        "--seed", "5"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "--- sample 1/2" and lines[2] == "--- sample 2/2"
    for text in (lines[1], lines[3]):
        ids = [int(t) for t in text.split()]
        assert ids[:3] == [3, 17, 42] and 3 < len(ids) <= 11 and all(0 <= t < 512 for t in ids)
    assert f"model: {smoke_run / WEIGHTS_FILE} (step 4, " in err
    sample.main([str(smoke_run), "--prompt", "3 17 42", "--max-new-tokens", "8", "--num-samples", "2", "--seed", "5"])
    assert capsys.readouterr().out == out  # same seed, same text
    assert sample.main([str(smoke_run), "--prompt", "hello"]) == 2
    assert "give --prompt as token ids" in capsys.readouterr().err


def test_text_tools_use_the_tokenizer_recorded_beside_the_shards(tmp_path, monkeypatch):
    """inference.sample / evals.hellaswag without --bpe: the BPE file data.prep.tokenize recorded in
    data.dir/tokenizer.json (a relative data.dir is the repository's); --bpe and data.tokenizer_bpe come first."""
    import json
    from types import SimpleNamespace

    from inference import weights
    from inference.weights import Trained

    ranks = tmp_path / "gpt2.tiktoken"
    ranks.write_text("x")
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "tokenizer.json").write_text(json.dumps({"name": "gpt2", "bpe_file": str(ranks)}))
    monkeypatch.setattr(weights, "gpt2_encoding", lambda bpe=None: bpe)  # which file would be loaded
    model = SimpleNamespace(cfg=SimpleNamespace(vocab_size=50257))
    trained = Trained(model, 10, "w.pt", "", False, 50256, str(shards))
    assert trained.encoding() == str(ranks)
    assert trained.encoding("other.tiktoken") == "other.tiktoken"
    ranks.unlink()  # the recorded file is gone: the default sources
    assert trained.encoding() is None
