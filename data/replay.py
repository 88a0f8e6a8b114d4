"""Replay a speedrun record's own batch order on the contiguous stream.

Our contiguous loader (data/loader.py) reads the train shards as one stream: a micro-batch may
straddle a shard boundary and no token is ever skipped. The records' loaders differ in two ways,
which `data.shard_tail` and `data.repeat_first_batch` reproduce:

- shard tails (`data.shard_tail`). The records never read across a shard boundary:
  - skip_micro_batch (records 4-12, their DistributedDataLoader): every rank starts a shard at its
    own piece of global micro-batch 0 (world x micro_batch_seqs x seq_len tokens = `span`) and moves
    on by `span` per read; it reads micro-batch j > 0 of a shard only if its own piece's start plus
    span + 1 tokens fit in the shard. That test is made per rank, so near a shard's end the higher
    ranks may move to the next shard one micro-batch before the lower ones, and stay ahead: the records
    trained that way on 8 GPUs, and so does this. (At world size 1 the rule is simply: a micro-batch
    that does not fit with its target token starts the next shard.)
  - skip_step (record 20, its generator): the unit is a whole optimizer step, train.global_batch_tokens,
    decided once for all ranks; a step is read from a shard only if two tokens beyond it fit too
    (it moves on when pos + batch + 1 >= shard length).
  Shards cycle (epoch after epoch) as in records 4-12; record 20's generator would stop instead.
- first batch twice (`data.repeat_first_batch`, records 4-9): their loop reads one batch, resets the
  loader, and then trains on the batch it read and next on the reset loader's first batch: the same
  tokens. So global micro-batch 0 is trained twice and every later one shifts by one.

Checkpoints: the state holds the number of global micro-batches read, the same on every rank, and a
rank rebuilds its own position from it (`state_dict()` of rank 0 restores every rank, as the plain
loader's); it also records the tail rule and whether the first batch is still to be repeated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.config import ShardTail
from data.loader import ContiguousLoader, DataError, to_batch


class ReplayLoader(ContiguousLoader):
    """ContiguousLoader that skips shard tails and/or repeats the first global micro-batch.

    step_tokens: tokens per optimizer step over all ranks (train.global_batch_tokens); the unit of
    shard_tail=skip_step. Yields int64 (inputs, targets) [micro_batch_seqs, seq_len] like its parent.
    """

    def __init__(self, files: list[Path], micro_batch_seqs: int, seq_len: int, rank: int = 0, world: int = 1, *,
                 shard_tail: ShardTail = ShardTail.read, step_tokens: int = 0, repeat_first_batch: bool = False,
                 vocab_size: int = 0, prefetch: bool = True):
        super().__init__(files, micro_batch_seqs, seq_len, rank, world, vocab_size=vocab_size, prefetch=prefetch)
        self.shard_tail = shard_tail.value  # what state_dict() records and load_state_dict() checks
        self.per_rank = shard_tail is ShardTail.skip_micro_batch
        if shard_tail is ShardTail.skip_step:
            if step_tokens <= 0 or step_tokens % self.span:
                raise DataError(f"data.shard_tail=skip_step needs train.global_batch_tokens ({step_tokens}) to be a "
                                f"positive multiple of one global micro-batch ({self.span} tokens)")
            self.unit, self.margin = step_tokens, 2
        elif shard_tail is ShardTail.skip_micro_batch:
            self.unit, self.margin = self.span, 1
        else:
            self.unit, self.margin = 0, 0
        if self.unit:
            need = self.unit + self.margin
            small = [(f, n) for f, n in zip(self.cache.files, self.cache.sizes) if n < need]
            if small:
                f, n = small[0]
                raise DataError(f"shard {f} holds {n} tokens, fewer than the {need} that data.shard_tail="
                                f"{shard_tail.value} reads from one shard; use data.shard_tail=read or bigger shards")
        self.repeat_pending = repeat_first_batch
        self.reads = 0  # global micro-batches read past (the repeat does not count)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.unit:  # read mode: the plain stream, with the first batch repeated
            if not self.repeat_pending:
                return super().next_batch()
            state = (self.shard, self.pos, self.epoch)
            batch = super().next_batch()
            self.shard, self.pos, self.epoch = state
            self.repeat_pending = False
            return batch
        n = self.B * self.T
        if self._tail_skipped(self.shard, self.pos):
            self.shard, self.pos = self.shard + 1, 0
            if self.shard == len(self.cache.sizes):
                self.shard, self.epoch = 0, self.epoch + 1
        tokens, _ = self.cache.get(self.shard)
        start = self.pos + self.rank * n
        buf = np.asarray(tokens[start:start + n + 1])
        if self.repeat_pending:  # global micro-batch 0 comes again next time
            self.repeat_pending = False
        else:
            self.pos += self.span
            self.reads += 1
        return to_batch(buf, self.B, self.T)

    def _tail_skipped(self, shard: int, pos: int) -> bool:
        """True when this rank does not read the global micro-batch at `pos` of `shard` (see the docstring)."""
        size = self.cache.sizes[shard]
        if self.per_rank:  # skip_micro_batch: this rank's piece must leave span + 1 tokens
            return pos > 0 and pos + self.rank * self.B * self.T + self.span + 1 > size
        return pos % self.unit == 0 and pos + self.unit + self.margin > size  # skip_step, same on every rank

    def _reads_in(self, shard: int) -> int:
        """Global micro-batches this rank reads from `shard` before it moves on (the first always fits)."""
        j = 1
        while not self._tail_skipped(shard, j * self.span):
            j += 1
        return j

    def state_dict(self) -> dict:
        return {**super().state_dict(), "shard_tail": self.shard_tail, "reads": self.reads,
                "repeat_pending": self.repeat_pending}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)  # checks the shards and refuses a state saved with another data.shard_tail
        self.repeat_pending = bool(state.get("repeat_pending", False))
        self.reads = int(state.get("reads", 0))
        if self.unit:  # this rank's own position after `reads` global micro-batches
            self.shard, self.pos, self.epoch, left = 0, 0, 0, self.reads
            while left >= (count := self._reads_in(self.shard)):
                left -= count
                self.shard += 1
                if self.shard == len(self.cache.sizes):
                    self.shard, self.epoch = 0, self.epoch + 1
            self.pos = left * self.span
