"""HellaSwag accuracy of a trained model, completion style as llm.c computes it.

    python -m evals.hellaswag outputs/runs/2025-06-01_12-00-00-000000     # downloads + caches the val set
    python -m evals.hellaswag RUN --data ~/hellaswag_val.jsonl --limit 1000 --batch-size 16 --out hs.json

For each example the model reads the context followed by each of the four endings; the ending's
tokens (only those) are scored by their cross-entropy under the model. `acc` picks the ending with the
lowest summed loss, `acc_norm` the one with the lowest loss per token (llm.c's two numbers; OpenAI's
GPT-2 124M scores acc_norm 0.2955 = 2967/10042 there). Random guessing gives 0.25. Rows are batched
(`--batch-size` examples, 4 rows each, padded at the end: causal attention never sees the padding) on
CPU or CUDA (bf16 autocast there, as in training). The model and tokenizer load as for inference.sample.
Without network, pass the file with --data (evals/hellaswag_data.py: where the download comes from and where
it is cached).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from common.atomic_io import write_text_atomic
from data.tokenizer import TokenizerError
from evals.hellaswag_data import (
    URL,
    Example,
    HellaSwagError,
    default_cache_dir,
    ensure_val_file,
    parse_examples,
    render,
)
from inference.weights import WeightsError, autocast_for, inference_device, load_trained


def batch_rows(examples: list[Example], encode: Callable[[str], list[int]], block_size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [4E, T] (context + ending, 0-padded at the end) and a mask [4E, T-1] that is True where
    target position t+1 is an ending token. A row longer than block_size loses context from the left."""
    rows, starts = [], []
    for ex in examples:
        ctx, endings = render(ex, encode)
        for ending in endings:
            tokens = (ctx + ending)[-block_size:]
            rows.append(tokens)
            starts.append(max(len(tokens) - len(ending), 1))  # the first token has nothing to predict it
    width = max(len(r) for r in rows)
    idx = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
    for i, (tokens, start) in enumerate(zip(rows, starts)):
        idx[i, :len(tokens)] = torch.tensor(tokens)
        mask[i, start - 1:len(tokens) - 1] = True
    return idx, mask


@torch.no_grad()
def ending_losses(model: Callable[[torch.Tensor], torch.Tensor], idx: torch.Tensor, mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed, mean per token) cross-entropy of each row's ending tokens, in nats: two [R] tensors.
    model(idx [R, T]) -> logits [R, T, V]."""
    logits = model(idx).float()
    losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), idx[:, 1:].reshape(-1),
                             reduction="none").view(mask.shape)
    summed = (losses * mask).sum(dim=1)
    return summed, summed / mask.sum(dim=1)


def evaluate(model: Callable[[torch.Tensor], torch.Tensor], examples: list[Example], encode: Callable[[str], list[int]],
             *, block_size: int, batch_size: int = 8, device: torch.device | str = "cpu",
             progress: bool = True) -> dict:
    """{"examples", "acc", "acc_norm", "correct", "correct_norm"} over `examples`."""
    from tqdm import tqdm

    device = torch.device(device)
    correct = correct_norm = 0
    bar = tqdm(total=len(examples), unit="ex", desc="hellaswag", disable=not progress)
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        idx, mask = batch_rows(chunk, encode, block_size)
        with autocast_for(device):
            summed, mean = ending_losses(model, idx.to(device), mask.to(device))
        labels = torch.tensor([ex.label for ex in chunk], device=device)
        correct += int((summed.view(-1, 4).argmin(dim=1) == labels).sum())
        correct_norm += int((mean.view(-1, 4).argmin(dim=1) == labels).sum())
        bar.update(len(chunk))
        bar.set_postfix(acc_norm=f"{correct_norm / min(i + batch_size, len(examples)):.4f}")
    bar.close()
    n = len(examples)
    return {"examples": n, "acc": correct / n, "acc_norm": correct_norm / n, "correct": correct,
            "correct_norm": correct_norm}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m evals.hellaswag", description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="a run folder, a checkpoint folder (.../checkpoints/step_NNNNNN) or a final_weights.pt")
    ap.add_argument("--data", default=None, help="a local hellaswag_val.jsonl (no download)")
    ap.add_argument("--cache-dir", default=None, help=f"where the download is kept (default {default_cache_dir()})")
    ap.add_argument("--url", default=URL, help="where to download the val set from")
    ap.add_argument("--limit", type=_count(0), default=0, help="evaluate the first N examples only (0 = all)")
    ap.add_argument("--batch-size", type=_count(1), default=8, help="examples per forward pass (4 rows each)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    ap.add_argument("--bpe", default=None, help="GPT-2 BPE file (.tiktoken or encoder.json), as inference.sample")
    ap.add_argument("--out", default=None, help="also write the result as JSON to this file (atomically)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def _count(low: int):
    """An argparse type: an integer >= low (argparse names the option in its one-line error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low} (got {value})")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        trained = load_trained(args.path, inference_device(args.device))
        encode = trained.encoding(args.bpe).encode_ordinary
        path = Path(args.data).expanduser() if args.data else ensure_val_file(
            Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir(), args.url,
            progress=not args.no_progress)
        examples = parse_examples(path)
    except (WeightsError, TokenizerError, HellaSwagError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    examples = examples[:args.limit] if args.limit else examples
    device = next(trained.model.parameters()).device
    result = evaluate(trained.model, examples, encode, block_size=trained.model.cfg.block_size,
                      batch_size=args.batch_size, device=device, progress=not args.no_progress)
    result.update({"model": trained.source, "step": trained.step, "data": str(path)})
    print(f"hellaswag: {result['examples']} examples | acc {result['acc']:.4f} | acc_norm {result['acc_norm']:.4f} "
          f"| model {trained.source} (step {trained.step})", flush=True)
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
