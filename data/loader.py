"""Distributed token loaders over memory-mapped shards: contiguous train stream and validation.

Contiguous mode (the classic speedrun stream). The train shards, in order, form
one token stream that repeats forever (epoch after epoch). A *global*
micro-step takes the next `world * B * T` tokens of it (+1 for the shifted
targets); rank r reads the r-th block of B*T of them. Gradient accumulation
simply consumes further global micro-steps, so world=1 with accumulation 2 sees
exactly the sequences per optimizer step that world=2 with accumulation 1 sees.
Micro-batches may straddle a shard boundary (and wrap from the last shard to the
first): no token is skipped, and the stream does not depend on world, B or T.

The position is global (identical on every rank): `state_dict()` from rank 0
restores every rank, also with another world size or batch shape.

Validation stays contiguous: the first `val_tokens` tokens of the val shards,
split across ranks, identical at every evaluation.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from common.tokens import EOT_TOKEN
from data.prefetch import ShardCache, check_vocab
from data.prep.sources import SUFFIXES as CORPUS_SUFFIXES
from data.shards import find_shards, open_shard

FIX_GET_DATA = ("get FineWeb shards with `python -m data.prep.fineweb download --out DIR`; a remapped folder "
                "(experiment=track3_proxy_cpu) is made by `python -m data.prep.remap`: the command is in its config")


class DataError(ValueError):
    """The data folder cannot feed the requested training or validation."""


def resolve_shards(directory: str, pattern: str, what: str) -> list[Path]:
    """Shard paths for `pattern` in `directory`; DataError naming data.dir if none."""
    if not directory:
        raise DataError(f"data.dir is not set: pass data.dir=/path/to/shards ({FIX_GET_DATA})")
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise DataError(f"data.dir={directory} is not a folder: point data.dir at a folder of token shards "
                        f"({FIX_GET_DATA})")
    files = find_shards(path, pattern)
    if not files:
        text = sorted(p.name for p in path.iterdir() if p.is_file() and p.name.lower().endswith(CORPUS_SUFFIXES))
        if text:  # a corpus, not shards: tokenizing is the way, not downloading
            raise DataError(f"data.dir={directory} holds text ({', '.join(text[:3])}{', ...' if len(text) > 3 else ''}), "
                            f"not {what} token shards matching {pattern!r}: tokenize it first with `python -m "
                            f"data.prep.tokenize {directory} --val-frac 0.05` (a single .txt: add --txt-split "
                            "paragraph), then pass data.dir=outputs/data/NAME as it prints")
        raise DataError(f"data.dir={directory} has no {what} shards matching {pattern!r} ({FIX_GET_DATA})")
    return files


def _check_shape(micro_batch_seqs: int, seq_len: int, rank: int, world: int) -> None:
    if micro_batch_seqs < 1 or seq_len < 1:
        raise DataError(f"micro_batch_seqs ({micro_batch_seqs}) and seq_len ({seq_len}) must be >= 1")
    if not 0 <= rank < world:
        raise DataError(f"rank {rank} is outside world size {world}")


def to_batch(buf: np.ndarray, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch*seq_len + 1] tokens -> inputs, targets: int64 [batch, seq_len] each."""
    t = torch.from_numpy(buf.astype(np.int64))
    return t[:-1].view(batch, seq_len), t[1:].view(batch, seq_len)


def cu_seqlens(tokens: torch.Tensor, bos: int = EOT_TOKEN) -> torch.Tensor:
    """1-D token ids [N] -> int32 cumulative document boundaries [0, s1, ..., N] (varlen attention)."""
    starts = torch.nonzero(tokens == bos).flatten()
    bounds = torch.cat([torch.zeros(1, dtype=starts.dtype), starts, torch.tensor([len(tokens)])])
    return torch.unique_consecutive(bounds).to(torch.int32)


class _StreamState:
    """Bookkeeping shared by the train loaders: shard files, position, save/restore."""

    mode = "?"
    shard_tail = "read"  # data.shard_tail of the stream (data/replay.py skips shard tails)

    def _init_state(self, cache: ShardCache) -> None:
        self.cache = cache
        self.shard, self.pos, self.epoch = 0, 0, 0

    def state_dict(self) -> dict:
        """Position in the global stream (same on every rank) + the shards it refers to."""
        return {"mode": self.mode, "shard": self.shard, "pos": self.pos, "epoch": self.epoch,
                "files": [f.name for f in self.cache.files], "sizes": list(self.cache.sizes)}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position. Shards may have been appended since, not changed."""
        if state.get("mode") != self.mode:
            raise DataError(f"loader state is for data.mode={state.get('mode')}, this run uses {self.mode}; "
                            "resume with the same data.mode")
        if state.get("shard_tail", "read") != self.shard_tail:
            raise DataError(f"loader state was saved with data.shard_tail={state.get('shard_tail')}, this run uses "
                            f"{self.shard_tail}; resume with the same data.shard_tail")
        files, sizes = list(state["files"]), list(state["sizes"])
        now = [f.name for f in self.cache.files]
        if now[:len(files)] != files or self.cache.sizes[:len(sizes)] != sizes:
            raise DataError(f"loader state was saved over other shards ({len(files)} files from {files[0]!r}) than "
                            f"data.dir now holds ({len(now)} from {now[0]!r}); resume with the same shards")
        if not 0 <= state["shard"] < len(files) or not 0 <= state["pos"] <= sizes[state["shard"]]:
            raise DataError(f"loader state position shard={state['shard']} pos={state['pos']} is out of range")
        self.shard, self.pos, self.epoch = int(state["shard"]), int(state["pos"]), int(state["epoch"])


class ContiguousLoader(_StreamState):
    """Endless stream of (inputs, targets) micro-batches, int64 [B, T], for one rank."""

    mode = "contiguous"

    def __init__(self, files: list[Path], micro_batch_seqs: int, seq_len: int, rank: int = 0, world: int = 1,
                 vocab_size: int = 0, prefetch: bool = True):
        _check_shape(micro_batch_seqs, seq_len, rank, world)
        self.B, self.T, self.rank, self.world = micro_batch_seqs, seq_len, rank, world
        self.span = world * micro_batch_seqs * seq_len  # tokens consumed per global micro-step
        self._init_state(ShardCache(files, vocab_size, prefetch))
        total = sum(self.cache.sizes)
        if total < self.span + 1:
            raise DataError(f"train shards hold {total} tokens, fewer than one global micro-batch of {self.span + 1} "
                            f"(world {world} x micro_batch_seqs {micro_batch_seqs} x seq_len {seq_len} + 1) "
                            f"in {self.cache.files[0].parent}; lower micro_batch_seqs or seq_len, or add data")
        self.cache.get(0)  # check shard 0 now, start prefetching shard 1

    def _forward(self, shard: int, pos: int, n: int) -> tuple[int, int, int]:
        """(shard, pos) moved n tokens ahead in the cyclic stream -> (shard, pos, epochs wrapped)."""
        wraps = 0
        pos += n
        while pos >= self.cache.sizes[shard]:
            pos -= self.cache.sizes[shard]
            shard += 1
            if shard == len(self.cache.sizes):
                shard, wraps = 0, wraps + 1
        return shard, pos, wraps

    def _read(self, shard: int, pos: int, n: int) -> np.ndarray:
        """n tokens of the cyclic stream from (shard, pos); usually one memmap slice, no copy."""
        pieces = []
        while n:
            tokens, _ = self.cache.get(shard)
            piece = tokens[pos:pos + n]
            pieces.append(piece)
            n -= len(piece)
            shard, pos = (shard + 1) % len(self.cache.sizes), 0
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.B * self.T
        shard, pos, _ = self._forward(self.shard, self.pos, self.rank * n)
        buf = self._read(shard, pos, n + 1)
        self.shard, self.pos, wraps = self._forward(self.shard, self.pos, self.span)
        self.epoch += wraps
        self.cache.get(self.shard)  # keep the next shard prefetching ahead of the position
        return to_batch(buf, self.B, self.T)


def validation_batches(files: list[Path], val_tokens: int, micro_batch_seqs: int, seq_len: int,
                       rank: int = 0, world: int = 1, vocab_size: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield this rank's (inputs, targets) batches covering the first `val_tokens` tokens.

    The val shards are read as one stream; the same fixed tokens are evaluated at
    every validation, split evenly across ranks (the caller averages the losses).
    """
    _check_shape(micro_batch_seqs, seq_len, rank, world)
    per_step = world * micro_batch_seqs * seq_len
    if val_tokens <= 0 or val_tokens % per_step:
        raise DataError(f"train.val_tokens={val_tokens} must be a positive multiple of world {world} x "
                        f"micro_batch_seqs {micro_batch_seqs} x seq_len {seq_len} = {per_step}")
    shards = [open_shard(f) for f in files]
    left = val_tokens + 1  # only the tokens evaluated are checked (each evaluation calls this again)
    for f, s in zip(files, shards):
        check_vocab(s[:left], vocab_size, f)
        left = max(left - len(s), 0)
    available = sum(len(s) for s in shards)
    if available < val_tokens + 1:
        raise DataError(f"val shards hold {available} tokens, fewer than train.val_tokens={val_tokens} + 1 "
                        f"in {files[0].parent}; lower train.val_tokens or add val data")
    stream = shards[0] if len(shards[0]) >= val_tokens + 1 else np.concatenate([np.asarray(s) for s in shards])

    def batches():
        for step in range(val_tokens // per_step):
            start = step * per_step + rank * micro_batch_seqs * seq_len
            yield to_batch(np.asarray(stream[start:start + micro_batch_seqs * seq_len + 1]), micro_batch_seqs, seq_len)

    return batches()  # checks above run at the call, not at the first batch
