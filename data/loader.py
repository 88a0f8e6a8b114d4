"""Distributed token loaders over memory-mapped shards.

Contiguous mode (the classic speedrun stream): the train shards are read in
order as one stream. A *global* micro-step takes `world * B * T` tokens (+1 for
the shifted targets); rank r reads the r-th block of B*T of it. Gradient
accumulation steps simply consume further global micro-steps, so a run with
world=1, accumulation=2 sees exactly the same sequences per optimizer step as
world=2, accumulation=1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.shards import find_shards, open_shard


class DataError(ValueError):
    """The data folder cannot feed the requested training or validation."""


def resolve_shards(directory: str, pattern: str, what: str) -> list[Path]:
    """Shard paths for `pattern` in `directory`; DataError naming data.dir if none."""
    if not directory:
        raise DataError("data.dir is not set: pass data.dir=/path/to/shards "
                        "(get FineWeb shards with `python -m data.fineweb download --out DIR`)")
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise DataError(f"data.dir={directory} is not a folder: point data.dir at a folder of token shards "
                        "(get FineWeb shards with `python -m data.fineweb download --out DIR`)")
    files = find_shards(path, pattern)
    if not files:
        raise DataError(f"data.dir={directory} has no {what} shards matching {pattern!r} "
                        "(get FineWeb shards with `python -m data.fineweb download --out DIR`)")
    return files


def _to_batch(buf: np.ndarray, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch*seq_len + 1] tokens -> inputs, targets: int64 [batch, seq_len] each."""
    t = torch.from_numpy(buf.astype(np.int64))
    return t[:-1].view(batch, seq_len), t[1:].view(batch, seq_len)


class ContiguousLoader:
    """Endless stream of (inputs, targets) micro-batches, shape [B, T], for one rank."""

    mode = "contiguous"

    def __init__(self, files: list[Path], micro_batch_seqs: int, seq_len: int, rank: int = 0, world: int = 1):
        self.files = list(files)
        self.B, self.T, self.rank, self.world = micro_batch_seqs, seq_len, rank, world
        self.span = world * micro_batch_seqs * seq_len  # tokens consumed per global micro-step
        self.sizes = [len(open_shard(f)) for f in self.files]  # validates every header up front
        usable = [n for n in self.sizes if n >= self.span + 1]
        if not usable:
            raise DataError(f"no train shard holds one global micro-batch of {self.span + 1} tokens "
                            f"(world {world} x micro_batch_seqs {micro_batch_seqs} x seq_len {seq_len}); "
                            f"largest shard has {max(self.sizes)} tokens")
        self.reset()

    def reset(self, shard: int = 0, pos: int = 0) -> None:
        self.shard, self.pos = shard, pos
        self.tokens = open_shard(self.files[self.shard])

    def _advance_shard(self) -> None:
        self.reset((self.shard + 1) % len(self.files), 0)

    def state_dict(self) -> dict:
        """Position in the global stream (the same on every rank) and the shards it refers to.

        Plain ints and strings, so a checkpoint loads with torch.load(weights_only=True).
        """
        return {"mode": self.mode, "shard": self.shard, "pos": self.pos,
                "files": [f.name for f in self.files], "sizes": list(self.sizes)}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position; the shards must be the ones it was saved over."""
        if state.get("mode") != self.mode:
            raise DataError(f"loader state is for data mode {state.get('mode')!r}, this run reads {self.mode!r}")
        if list(state["files"]) != [f.name for f in self.files] or list(state["sizes"]) != self.sizes:
            raise DataError(f"the checkpoint's loader position refers to other train shards ({len(state['files'])} "
                            f"files from {state['files'][0]!r}) than data.dir holds now ({len(self.files)} from "
                            f"{self.files[0].name!r}); resume with the same data.dir")
        shard, pos = int(state["shard"]), int(state["pos"])
        if not (0 <= shard < len(self.files) and 0 <= pos <= self.sizes[shard]):
            raise DataError(f"loader state position shard={shard} pos={pos} is out of range")
        self.reset(shard, pos)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while self.pos + self.span + 1 > len(self.tokens):
            self._advance_shard()
        start = self.pos + self.rank * self.B * self.T
        buf = np.asarray(self.tokens[start:start + self.B * self.T + 1])
        self.pos += self.span
        return _to_batch(buf, self.B, self.T)


def validation_batches(files: list[Path], val_tokens: int, micro_batch_seqs: int, seq_len: int,
                       rank: int = 0, world: int = 1):
    """Yield this rank's (inputs, targets) batches covering the first `val_tokens` tokens.

    The val shards are read as one stream; the same fixed tokens are evaluated at
    every validation, split evenly across ranks (the caller averages the losses).
    """
    per_step = world * micro_batch_seqs * seq_len
    if val_tokens % per_step:
        raise DataError(f"train.val_tokens={val_tokens} is not divisible by world {world} x "
                        f"micro_batch_seqs {micro_batch_seqs} x seq_len {seq_len} = {per_step}")
    shards = [open_shard(f) for f in files]
    available = sum(len(s) for s in shards)
    if available < val_tokens + 1:
        raise DataError(f"val shards hold {available} tokens, fewer than train.val_tokens={val_tokens} + 1; "
                        "lower train.val_tokens or add val data")
    stream = shards[0] if len(shards) == 1 else np.concatenate([np.asarray(s) for s in shards])
    for step in range(val_tokens // per_step):
        start = step * per_step + rank * micro_batch_seqs * seq_len
        buf = np.asarray(stream[start:start + micro_batch_seqs * seq_len + 1])
        yield _to_batch(buf, micro_batch_seqs, seq_len)
