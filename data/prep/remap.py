"""Remap a folder of token shards to its K most frequent train tokens plus one catch-all id.

    python -m data.prep.remap SRC --top-k K --out OUT [--overwrite] [--no-progress]

The rule (the mapping is a function of the train shards alone, so val is never peeked at):

- count every token id over SRC's train shards (`fineweb_train_*.bin`);
- keep the K most frequent ids, ties broken by the smaller id, and renumber them 0..K-1 in that order
  (the most frequent becomes 0); every other id, in train and val alike, becomes the catch-all id K.
  The vocabulary is K + 1 (8192 for K = 8191, a multiple of 64: no padding needed);
- write every val and train shard under its own name into OUT, in the same shard format, and
  `vocab_remap.json` beside them (data/vocab_remap.py: K, the kept ids in order, the catch-all
  fractions, the sha256 of every source shard). That file is what marks OUT as remapped: the trainer
  refuses a model whose vocabulary is not K + 1 on it.

BOS: GPT-2's <|endoftext|> (50256), which starts every document, is remapped like any other id: it
gets its frequency rank (the file's `bos_token`; 128 on the FineWeb sample with K = 8191), or the
catch-all if it is not among the K. A BOS-aligned loader (data.mode=bos) takes it from the file and
refuses a folder where it fell to the catch-all; the track-3 proxies read contiguously (no BOS).

Shards are read in fixed-size chunks (--chunk-tokens; the output does not depend on it) and written into
a staging folder beside OUT that replaces OUT only once everything is written and checked, so an error
or Ctrl-C leaves OUT as it was. Refused, with exit 2 and the fix: a SRC without train or val shards, a
bad shard (named), K < 1 or K >= SRC's vocabulary, an existing non-empty OUT (unless --overwrite), OUT = SRC.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from common import exit_codes
from common.atomic_io import atomic_open, fsync_dir
from common.tokens import EOT_TOKEN, VOCAB_SIZE
from data.config import DataConfig
from data.shards import HEADER_BYTES, TOKEN_DTYPE, ShardError, find_shards, read_header, shard_header
from data.vocab_remap import FORMAT, FORMAT_VERSION, REMAP_FILE, read_remap

ID_SPACE = 1 << 16                # every uint16 id: the lookup table covers all, so a bad id cannot index past it
DEFAULT_CHUNK_TOKENS = 1 << 22    # tokens per read (8 MiB): bounded memory for 100M-token shards


class RemapError(ValueError):
    """A refused input or output; the message names the fix."""


def _chunks(path: Path, num_tokens: int, chunk_tokens: int, hasher=None) -> Iterator[np.ndarray]:
    """The shard's tokens in order, `chunk_tokens` at a time (uint16); the raw file bytes feed `hasher`."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        if hasher is not None:
            hasher.update(head)
        left = num_tokens
        while left:
            n = min(chunk_tokens, left)
            raw = f.read(n * TOKEN_DTYPE.itemsize)
            if len(raw) != n * TOKEN_DTYPE.itemsize:
                raise ShardError(f"shard {path} changed while being read; do not modify the source during a remap")
            if hasher is not None:
                hasher.update(raw)
            yield np.frombuffer(raw, dtype=TOKEN_DTYPE)
            left -= n


def _too_large(path: Path, token: int, vocab: int) -> ShardError:
    return ShardError(f"shard {path} holds token id {token} >= the source vocabulary {vocab}: it is not a shard "
                      f"of this tokenizer; re-tokenize it (python -m data.prep.tokenize)")


def select_top_k(counts: np.ndarray, k: int) -> np.ndarray:
    """The k ids with the largest counts, most frequent first, ties by the smaller id. counts: [vocab] int."""
    ids = np.arange(len(counts))
    return np.lexsort((ids, -counts.astype(np.int64)))[:k]


def remap_shards(src: str | os.PathLike, out: str | os.PathLike, top_k: int, overwrite: bool = False,
                 progress: bool = True, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> dict:
    """Write SRC's shards remapped to its `top_k` most frequent train ids + a catch-all into OUT.

    Returns the mapping record written to OUT/vocab_remap.json (plus "out" and "seconds").
    """
    t0 = time.perf_counter()
    src, out = Path(src).expanduser(), Path(out).expanduser()
    patterns = DataConfig.train_pattern, DataConfig.val_pattern
    if not src.is_dir():
        raise RemapError(f"{src} is not a folder: give the folder of token shards to remap")
    train, val = (find_shards(src, p) for p in patterns)
    if not train or not val:
        missing = " and ".join(p for p, f in zip(patterns, (train, val), strict=True) if not f)
        raise RemapError(f"{src} has no shards matching {missing}: give a folder with both train and val shards "
                         f"(python -m data.prep.tokenize or data.prep.fineweb makes them)")
    source_remap = read_remap(src)  # a remapped folder can be remapped again, to a smaller K
    src_vocab = VOCAB_SIZE if source_remap is None else source_remap.vocab_size
    src_bos = EOT_TOKEN if source_remap is None else source_remap.bos_token
    if not 1 <= top_k < src_vocab:
        raise RemapError(f"--top-k {top_k} must be in [1, {src_vocab - 1}] (the source vocabulary is {src_vocab})")
    if chunk_tokens < 1:
        raise RemapError(f"--chunk-tokens must be >= 1, got {chunk_tokens}")
    if out.resolve() == src.resolve():
        raise RemapError(f"--out {out} is the source folder: write the remapped shards to another folder")
    if (out.is_dir() and any(out.iterdir()) or out.exists() and not out.is_dir()) and not overwrite:
        raise RemapError(f"{out} already exists and is not empty: pass --overwrite to replace it, or another --out")
    sizes = {f: read_header(f).num_tokens for f in val + train}  # every header and size, before any work

    from tqdm import tqdm
    bar = tqdm(total=2 * sum(sizes[f] for f in train) + sum(sizes[f] for f in val), unit="tok", unit_scale=True,
               desc="remap", disable=not progress)
    counts, sha = np.zeros(ID_SPACE, dtype=np.int64), {}
    for f in train:  # pass 1: count (and hash) the train shards
        h, c = hashlib.sha256(), np.zeros(ID_SPACE, dtype=np.int64)
        for chunk in _chunks(f, sizes[f], chunk_tokens, h):
            c += np.bincount(chunk, minlength=ID_SPACE)
            bar.update(len(chunk))
        if c[src_vocab:].any():
            raise _too_large(f, src_vocab + int(np.flatnonzero(c[src_vocab:])[0]), src_vocab)
        counts += c
        sha[f.name] = h.hexdigest()
    kept = select_top_k(counts[:src_vocab], top_k)
    lut = np.full(ID_SPACE, top_k, dtype=TOKEN_DTYPE)
    lut[kept] = np.arange(top_k, dtype=TOKEN_DTYPE)
    train_tokens = int(counts.sum())

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.remap-{secrets.token_hex(4)}.tmp"
    stage.mkdir()
    try:
        val_tokens = val_caught = 0
        for f in val + train:  # pass 2: write (and hash the val shards, read here for the first time)
            h = hashlib.sha256() if f in val else None
            with atomic_open(stage / f.name) as w:
                w.write(shard_header(sizes[f]))
                for chunk in _chunks(f, sizes[f], chunk_tokens, h):
                    if h is not None and len(chunk) and int(chunk.max()) >= src_vocab:
                        raise _too_large(f, int(chunk.max()), src_vocab)
                    mapped = lut[chunk]
                    if h is not None:
                        val_tokens += len(chunk)
                        val_caught += int(np.count_nonzero(mapped == top_k))
                    w.write(mapped.tobytes())
                    bar.update(len(chunk))
            if read_header(stage / f.name).num_tokens != sizes[f]:  # the written shard's own header check
                raise ShardError(f"remapped shard {stage / f.name} does not hold {sizes[f]} tokens")
            if h is not None:
                sha[f.name] = h.hexdigest()
        record = {
            "format": FORMAT, "version": FORMAT_VERSION, "source": str(src.resolve()),
            "top_k": top_k, "catch_all": top_k, "vocab_size": top_k + 1, "source_vocab": src_vocab,
            "bos_token": int(lut[src_bos]), "source_bos_token": src_bos,
            "catch_all_fraction": (train_tokens - int(counts[kept].sum())) / max(train_tokens, 1),
            "catch_all_fraction_val": val_caught / max(val_tokens, 1),
            "train_tokens": train_tokens, "val_tokens": val_tokens,
            "source_shards": {f.name: {"sha256": sha[f.name], "tokens": sizes[f]} for f in val + train},
            "kept_ids": [int(i) for i in kept],
        }
        with atomic_open(stage / REMAP_FILE, "w") as w:
            json.dump(record, w, indent=1)
            w.write("\n")
        _replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        bar.close()
    return record | {"out": str(out), "seconds": time.perf_counter() - t0}


def _replace(stage: Path, out: Path) -> None:
    """Move the finished staging folder to OUT; an old OUT (--overwrite) goes only once the new one is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
    os.rename(stage, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data.prep.remap", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="folder of token shards (fineweb_train_*.bin and fineweb_val_*.bin)")
    p.add_argument("--top-k", type=int, required=True, help="ids kept (the vocabulary becomes K + 1)")
    p.add_argument("--out", required=True, help="output folder (e.g. outputs/data/NAME, git-ignored)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS,
                   help=f"tokens per read (default {DEFAULT_CHUNK_TOKENS:,}); the output does not depend on it")
    args = p.parse_args(argv)

    def run() -> int:
        r = remap_shards(args.src, args.out, args.top_k, overwrite=args.overwrite, progress=not args.no_progress,
                         chunk_tokens=args.chunk_tokens)
        print(f"{r['train_tokens']:,} train + {r['val_tokens']:,} val tokens remapped to {r['vocab_size']} ids in "
              f"{r['seconds']:.1f} s: catch-all id {r['catch_all']} holds {r['catch_all_fraction']:.1%} of train, "
              f"{r['catch_all_fraction_val']:.1%} of val; <|endoftext|> {r['source_bos_token']} -> {r['bos_token']}")
        print(f"mapping in {r['out']}/{REMAP_FILE}; train with data.dir={r['out']} model.vocab_size={r['vocab_size']}")
        return exit_codes.OK

    return exit_codes.run_command(run, (RemapError, ShardError, OSError),
                                  f"{args.out} was left as it was")


if __name__ == "__main__":
    sys.exit(main())
