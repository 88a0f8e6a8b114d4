"""Make a bigger shard folder from a small sample by repeating its train tokens (for speed checks only).

    python -m tools.repeat_shards --src ../shared/corpora/fineweb-sample/tokens --out outputs/data/tiled \
        --train-tokens 40000000

The val shards are linked unchanged; the train shards' tokens, in order, are repeated until
--train-tokens and cut into shards of --shard-tokens. A record script's loader that does not cycle
(record 20's) can then run as many steps as the GPU check has time for. Every epoch is the same
tokens, so a val loss after the first pass measures training on repeated data: compare runs with
each other (ours vs a reference on the same folder), never with a record's curve.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data.shards import find_shards, open_shard, write_shard


def repeat_shards(src: Path, out: Path, train_tokens: int, shard_tokens: int) -> list[Path]:
    train, val = find_shards(src, "fineweb_train_*.bin"), find_shards(src, "fineweb_val_*.bin")
    if not train or not val:
        raise SystemExit(f"error: {src} needs fineweb_train_*.bin and fineweb_val_*.bin shards")
    out.mkdir(parents=True, exist_ok=True)
    for f in val:
        link = out / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    for old in find_shards(out, "fineweb_train_*.bin"):  # an earlier call's shards: replaced, never mixed
        old.unlink()
    stream = np.concatenate([np.asarray(open_shard(f)) for f in train])
    reps = -(-train_tokens // len(stream))
    tiled = np.tile(stream, reps)[:train_tokens]
    written = []
    for i, start in enumerate(range(0, train_tokens, shard_tokens), 1):
        written.append(write_shard(out / f"fineweb_train_{i:06d}.bin", tiled[start:start + shard_tokens]).path)
    print(f"{out}: {len(val)} val shard(s) linked; {train_tokens:,} train tokens ({train_tokens / len(stream):.1f} x "
          f"the {len(stream):,} of {src}) in {len(written)} shards")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.repeat_shards", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train-tokens", type=int, required=True)
    ap.add_argument("--shard-tokens", type=int, default=20_000_000)
    args = ap.parse_args(argv)
    if args.train_tokens <= 0 or args.shard_tokens <= 0:
        raise SystemExit("error: --train-tokens and --shard-tokens must be > 0")
    repeat_shards(args.src, args.out, args.train_tokens, args.shard_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
