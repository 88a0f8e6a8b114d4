"""Loader throughput on this machine: tokens/s per process that `next_batch()` delivers.

    python -m benchmarks.loader [--dir SHARDS] [--seconds 2] [--out results/benchmarks/loader_cpu.md]

What is measured: wall time of `loader.next_batch()` on one process (rank 0 of
`--world` ranks), i.e. locating the batch in the memory-mapped shards, slicing it
and building the int64 (inputs, targets) tensors [B, T]; for BOS-aligned mode also
packing the rows of the whole global micro-step (all ranks' rows, as every rank
does) and gathering this rank's rows. Not measured: the copy to the GPU and
reading from a cold disk (shards are in the page cache; the prefetch thread reads
the next shard ahead). tokens/s counts B*T input tokens per call.

Without --dir, shards are synthesized in a temporary folder: documents of
geometric length (mean 1000 tokens, like FineWeb's ~1,000-1,500), each starting
with 50256, 2 shards of 25M tokens.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.atomic_io import write_text_atomic
from common.tokens import EOT_TOKEN
from data.bos import BOSAlignedLoader
from data.loader import ContiguousLoader
from data.shards import find_shards, write_shard


def synthesize(folder: Path, shards: int = 2, tokens_per_shard: int = 25_000_000, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(1, shards + 1):
        tokens = rng.integers(0, EOT_TOKEN, tokens_per_shard, dtype=np.int64).astype(np.uint16)
        starts = np.cumsum(rng.geometric(1 / 1000, size=tokens_per_shard // 500))
        tokens[starts[starts < tokens_per_shard]] = EOT_TOKEN
        tokens[0] = EOT_TOKEN
        paths.append(write_shard(folder / f"fineweb_train_{i:06d}.bin", tokens).path)
    return paths


def measure(loader, seconds: float) -> float:
    """tokens/s of next_batch() over about `seconds` (after a warm-up)."""
    for _ in range(10):
        loader.next_batch()
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10):
            x, _ = loader.next_batch()
        calls += 10
    return calls * x.numel() / elapsed


def slicing_only(files: list[Path], B: int, T: int, seconds: float) -> float:
    """The floor: one memmap slice + int64 conversion + tensor views per batch, no loader logic."""
    from data.shards import open_shard

    tokens = np.asarray(open_shard(files[0]))
    n, calls, pos, t0 = B * T, 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10):
            if pos + n + 1 > len(tokens):
                pos = 0
            buf = torch.from_numpy(tokens[pos:pos + n + 1].astype(np.int64))
            x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
            pos += n
        calls += 10
    return calls * n / elapsed


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None, help="folder of fineweb_train_*.bin shards (default: synthesize)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per configuration")
    p.add_argument("--world", type=int, default=8, help="simulated world size (this process is rank 0)")
    p.add_argument("--out", default="results/benchmarks/loader_cpu.md")
    args = p.parse_args()
    tmp = None
    if args.dir:
        files = find_shards(args.dir, "fineweb_train_*.bin")
        source = f"shards in {args.dir}"
    else:
        tmp = tempfile.TemporaryDirectory()
        files = synthesize(Path(tmp.name))
        source = "2 synthetic shards x 25M tokens (documents of geometric length, mean 1000)"
    configs = [  # (label, mode, B, T, max_doc_len)
        ("contiguous", "contiguous", 64, 1024, 0),
        ("contiguous", "contiguous", 8, 1024, 0),
        ("contiguous", "contiguous", 1, 65536, 0),
        ("BOS-aligned", "bos", 64, 1024, 0),
        ("BOS-aligned", "bos", 8, 1024, 0),
        ("BOS-aligned, docs capped at 256", "bos", 64, 1024, 256),
        ("BOS-aligned, docs capped at 2048", "bos", 1, 65536, 2048),
    ]
    rows = []
    floor = slicing_only(files, 64, 1024, args.seconds)
    print(f"memmap slice + int64 tensors only (B=64, T=1024): {floor / 1e6:,.0f} M tokens/s")
    for label, mode, B, T, cap in configs:
        if mode == "contiguous":
            loader = ContiguousLoader(files, B, T, rank=0, world=args.world, vocab_size=50257)
        else:
            loader = BOSAlignedLoader(files, B, T, rank=0, world=args.world, max_doc_len=cap, vocab_size=50257)
        rate = measure(loader, args.seconds)
        rows.append((label, B, T, rate))
        print(f"{label:34s} B={B:3d} T={T:6d} world={args.world}: {rate / 1e6:8,.0f} M tokens/s per process")
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    lines = [
        "# Loader throughput (CPU)",
        "",
        f"Command: `python -m benchmarks.loader{' --dir ' + args.dir if args.dir else ''} --seconds {args.seconds:g}"
        f" --world {args.world}`  ",
        f"Machine: {cpu}, {torch.get_num_threads()} torch threads; Python {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__}  ",
        f"Data: {source}; shards in the page cache.",
        "",
        "Measured: wall time of `next_batch()` in one process (rank 0 of the simulated world): locate the batch in",
        "the memory-mapped shards, slice it, build int64 inputs/targets [B, T]; BOS-aligned mode also packs the rows",
        "of the whole global micro-step (every rank does) and gathers this rank's rows. Not measured: host-to-GPU",
        "copy, cold-disk reads (the prefetch thread reads the next shard ahead). tokens/s = B*T per call.",
        "",
        "| mode | B | T | M tokens/s per process |",
        "|---|---:|---:|---:|",
        *[f"| {label} | {B} | {T} | {rate / 1e6:,.0f} |" for label, B, T, rate in rows],
        f"| floor: memmap slice + int64 tensors, no loader logic | 64 | 1024 | {floor / 1e6:,.0f} |",
        "",
        "Target: >= 100M tokens/s per process for contiguous batches. For scale: an 8xH100 speedrun step",
        "consumes 524,288 tokens, 65,536 per rank; at ~10 steps/s that is ~0.7M tokens/s per process.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "\n".join(lines))
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
