"""Records 29, 43 and 46's data (data.mode=varlen): documents packed per rank with cu_seqlens, any world size.

Units are tokens. L = rank_tokens (tokens per rank per micro-step of the 8-GPU run), C = max_doc_len,
V = virtual_ranks (the script's world size, 8), M = cu_seqlens_size(L).

The packing (records 29-46, `BOSFinder` + `distributed_data_generator` with align_to_bos=True):
- a shard's documents start at its BOS tokens (<|endoftext|>); document k runs to the next BOS, the
  last one to the shard's end. Tokens before a shard's first BOS are never read;
- one step of the 8-GPU run fills V rank chunks, in rank order, from one cursor (a document index).
  A chunk holds exactly L + 1 tokens: whole documents, each cut to its first C tokens, appended until
  it is full; the document that overflows is cut there. The next chunk starts at the next document
  (the rest of a cut document is never read);
- when the shard's documents run out before the V-th chunk is full, the whole step is taken again
  from the next shard's first document: a step never spans two shards;
- a chunk gives inputs = chunk[:-1] (int32 [L]), targets = chunk[1:] (int64 [L]) and cu_seqlens
  (int32 [M]): 0, the running sum of its piece lengths with the last piece one shorter (the target
  shift), then L repeated to length M = the next multiple of 128 >= L // 300 (at least 128);
- record 46 changes L (and could change C) between steps (its generator's `.send`): `set_sizes`;
  the cursor stays where it is.

Versions (data.varlen.version):
- record29: every shard's document starts are indexed in full before its first step.
- record43 (records 43 and 46): the run's first shard uses, for its first 5 steps, only the BOS
  positions among its first 4,000,000 tokens ("quickload"): the last of those documents then runs to
  the shard's end (capped by C), and running out of them moves on to the second shard. Later shards,
  and the first one from its 6th step, are indexed in full.
Both: records 29 and 43's generators take a new batch size through `.send` without dividing it by the
accumulation (they never send); `set_sizes` follows record 46's, which does.

World sizes: at world w (a divisor of V) a step is A = V / w micro-steps, and rank r's micro-step a is
virtual rank v = a * w + r of the 8-GPU step. The script run at world w gives the same order away from
shard ends (there it drops the rest of a shard by its own, smaller, unit); we replay the 8-GPU run at
every world size. Every rank plans all V chunks (index arithmetic only) and reads only its own.

Differs from the scripts, by design: shards cycle (the scripts stop after the last one: record 29
with an error, 43 and 46 hang); every shard is read and indexed in the prefetch thread
(data/prefetch.py; record 29 reads synchronously); a shard with no BOS at all stops the run, naming
it (the scripts skip it silently); a chunk with more than M - 1 documents raises DataError (the
scripts fail on a tensor shape). The validation stream (`VarlenValidation`, align_to_bos=False) is
contiguous: see its docstring.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.tokens import EOT_TOKEN
from data.config import VarlenVersion
from data.loader import DataError, _StreamState
from data.prefetch import ShardCache, check_vocab
from data.shards import open_shard

QUICKLOAD_TOKENS = 4_000_000  # record 43: the first shard's first steps see BOS positions below this
QUICKLOAD_STEPS = 5           # ... for this many steps
CU_DOC_TOKENS = 300           # cu_seqlens room: one document per 300 tokens (the records' median is ~400)
CU_MULTIPLE = 128


def cu_seqlens_size(rank_tokens: int) -> int:
    """M: the records' cu_seqlens length for L tokens: next multiple of 128 >= L // 300, at least 128."""
    need = rank_tokens // CU_DOC_TOKENS
    return max(CU_MULTIPLE, -(-need // CU_MULTIPLE) * CU_MULTIPLE)


def padded_cu_seqlens(bounds: np.ndarray, rank_tokens: int) -> torch.Tensor:
    """Document boundaries after 0 (int [k]) -> int32 [M]: 0, bounds, then L up to length M."""
    size = cu_seqlens_size(rank_tokens)
    if len(bounds) + 1 > size:
        raise DataError(f"a micro-batch of {rank_tokens} tokens (train.seq_len / data.varlen.val_rank_tokens) holds "
                        f"{len(bounds)} documents, more than the {size - 1} its cu_seqlens hold (the records allow "
                        f"one per {CU_DOC_TOKENS} tokens): these documents are much shorter than FineWeb's")
    out = np.full(size, rank_tokens, dtype=np.int32)
    out[0] = 0
    out[1:len(bounds) + 1] = bounds
    return torch.from_numpy(out)


def bos_positions(tokens: np.ndarray, bos: int) -> np.ndarray:
    """int64 [D]: the positions of `bos` in a shard (the prefetch thread's work)."""
    return np.flatnonzero(np.asarray(tokens) == bos).astype(np.int64)


@dataclass(frozen=True)
class DocTable:
    """A shard's documents as the packing sees them."""

    starts: np.ndarray  # int64 [D]: each document's BOS position
    cum: np.ndarray     # int64 [D+1]: cum[k] = sum over documents < k of min(length, C)


def doc_table(starts: np.ndarray, size: int, cap: int) -> DocTable:
    """Capped document lengths of a shard of `size` tokens whose documents start at `starts`."""
    lengths = np.diff(starts, append=size) if len(starts) else np.zeros(0, dtype=np.int64)
    cum = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(np.minimum(lengths, cap), out=cum[1:])
    return DocTable(starts, cum)


def plan_chunks(cum: np.ndarray, first: int, rank_tokens: int, ranks: int) -> list[tuple[int, int]] | None:
    """The V chunks of one step from document `first`: [(d0, d1)], chunk v uses documents d0..d1-1.

    Chunk v ends at the first document where its capped length reaches L + 1; None when the shard's
    documents run out first (the step then comes from the next shard).
    """
    chunks, d, need = [], first, rank_tokens + 1
    for _ in range(ranks):
        end = int(np.searchsorted(cum, cum[d] + need, side="left"))
        if end >= len(cum):
            return None
        chunks.append((d, end))
        d = end
    return chunks


def read_chunk(tokens: np.ndarray, table: DocTable, d0: int, d1: int,
               rank_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Documents d0..d1-1 of a shard -> inputs int32 [L], targets int64 [L], cu_seqlens int32 [M]."""
    lengths = np.diff(table.cum[d0:d1 + 1])
    lengths[-1] -= int(table.cum[d1] - table.cum[d0]) - (rank_tokens + 1)  # the last document is cut to fit
    offsets = np.cumsum(lengths) - lengths
    index = np.repeat(table.starts[d0:d1] - offsets, lengths) + np.arange(rank_tokens + 1)
    buf = np.asarray(tokens[index])
    lengths[-1] -= 1  # the chunk's last token is only a target
    return (torch.from_numpy(buf[:-1].astype(np.int32)), torch.from_numpy(buf[1:].astype(np.int64)),
            padded_cu_seqlens(np.cumsum(lengths), rank_tokens))


def _check_sizes(rank_tokens: int, max_doc_len: int) -> None:
    for key, value in (("train.seq_len", rank_tokens), ("data.varlen.max_doc_len", max_doc_len)):
        if value < 1:
            raise DataError(f"{key} must be >= 1, got {value}")


def _check_world(rank: int, world: int, virtual_ranks: int) -> None:
    if virtual_ranks < 1 or world < 1 or virtual_ranks % world:
        raise DataError(f"data.varlen.virtual_ranks={virtual_ranks} must be a positive multiple of the world size "
                        f"{world}: each rank replays virtual_ranks / world of the record's ranks per step")
    if not 0 <= rank < world:
        raise DataError(f"rank {rank} is outside world size {world}")


class VarlenLoader(_StreamState):
    """This rank's endless stream of the records' packed micro-batches (see the module docstring).

    `next_batch()` -> (inputs int32 [L], targets int64 [L], cu_seqlens int32 [M]) on the CPU; a step
    is `accum_steps` = V / world calls. `set_sizes(rank_tokens, max_doc_len)` between steps. State:
    `shard`, `pos` (the next step's first document), `epoch`, `quick_left` (record 43's quickload
    steps left), and `micro` (micro-steps of the current step already taken).
    """

    mode = "varlen"

    def __init__(self, files: list[Path], rank_tokens: int, max_doc_len: int, rank: int = 0, world: int = 1, *,
                 virtual_ranks: int = 8, version: VarlenVersion = VarlenVersion.record43, vocab_size: int = 0,
                 prefetch: bool = True, bos: int = EOT_TOKEN, quickload_tokens: int = QUICKLOAD_TOKENS):
        _check_sizes(rank_tokens, max_doc_len)
        _check_world(rank, world, virtual_ranks)
        self.rank, self.world, self.virtual_ranks, self.bos = rank, world, virtual_ranks, bos
        self.accum_steps = virtual_ranks // world
        self.version, self.quickload_tokens = version, quickload_tokens
        self.rank_tokens, self.max_doc_len = rank_tokens, max_doc_len
        self._init_state(ShardCache(files, vocab_size, prefetch, prepare=lambda t: bos_positions(t, bos)))
        self.quick_left = QUICKLOAD_STEPS if version is VarlenVersion.record43 else 0
        self.micro, self._step, self._from = 0, None, None
        self._tables: dict[tuple, DocTable] = {}
        self._table(0)  # check shard 0 now, start prefetching shard 1

    def set_sizes(self, rank_tokens: int, max_doc_len: int) -> None:
        """From the next step on: L = rank_tokens, C = max_doc_len (record 46's `.send((L * 8, C, accum))`)."""
        if self.micro:
            raise DataError(f"set_sizes at micro-step {self.micro} of {self.accum_steps}: the sizes change between "
                            "optimizer steps only")
        _check_sizes(rank_tokens, max_doc_len)
        self.rank_tokens, self.max_doc_len = rank_tokens, max_doc_len

    def _table(self, shard: int) -> DocTable:
        tokens, starts = self.cache.get(shard)
        if not len(starts):
            raise DataError(f"train shard {self.cache.files[shard]} holds no document start (token {self.bos}): "
                            "data.mode=varlen packs documents that begin with <|endoftext|>; use data.mode=contiguous, "
                            "or re-tokenize with a separator")
        quick = self.quick_left > 0
        key = (shard, self.max_doc_len, quick)
        if key not in self._tables:
            if quick:
                starts = starts[:np.searchsorted(starts, self.quickload_tokens)]
            self._tables = {key: doc_table(starts, len(tokens), self.max_doc_len)}
        return self._tables[key]

    def _plan_step(self) -> tuple[int, DocTable, list[tuple[int, int]]]:
        """Plan the next step's V chunks from the cursor and move the cursor past them."""
        for _ in range(len(self.cache.files) + 1):
            table = self._table(self.shard)
            chunks = plan_chunks(table.cum, self.pos, self.rank_tokens, self.virtual_ranks)
            if chunks is not None:
                self.pos = chunks[-1][1]
                self.quick_left = max(self.quick_left - 1, 0)
                return self.shard, table, chunks
            self.shard, self.pos, self.quick_left = (self.shard + 1) % len(self.cache.files), 0, 0
            self.epoch += self.shard == 0
        raise DataError(f"no train shard in {self.cache.files[0].parent} holds one step of {self.virtual_ranks} x "
                        f"(train.seq_len {self.rank_tokens} + 1) document tokens: lower "
                        "train.seq_len or use bigger shards")

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's next micro-step: virtual rank micro * world + rank of the current step."""
        if self.micro == 0:
            self._from = (self.shard, self.pos, self.epoch, self.quick_left)
            self._step = self._plan_step()
        shard, table, chunks = self._step
        d0, d1 = chunks[self.micro * self.world + self.rank]
        tokens, _ = self.cache.get(shard)
        self.micro = (self.micro + 1) % self.accum_steps
        return read_chunk(tokens, table, d0, d1, self.rank_tokens)

    def state_dict(self) -> dict:
        """The cursor at the start of the current step, the micro-steps taken in it, and the stage's sizes."""
        state = super().state_dict()
        if self.micro:  # mid-step: the step is re-planned from where it began
            state["shard"], state["pos"], state["epoch"], quick_left = self._from
        else:
            quick_left = self.quick_left
        return {**state, "version": self.version.value, "virtual_ranks": self.virtual_ranks, "world": self.world,
                "quick_left": quick_left, "micro": self.micro, "rank_tokens": self.rank_tokens,
                "max_doc_len": self.max_doc_len}

    def load_state_dict(self, state: dict) -> None:
        """Resume where `state_dict()` was taken: mid-stage with its sizes, mid-step at the same world size."""
        if state.get("mode") != self.mode:
            raise DataError(f"loader state is for data.mode={state.get('mode')}, this run uses {self.mode}; "
                            "resume with the same data.mode")
        for key, now in (("version", self.version.value), ("virtual_ranks", self.virtual_ranks)):
            if state.get(key) != now:
                raise DataError(f"loader state was saved with data.varlen.{key}={state.get(key)}, this run uses {now}; "
                                f"resume with the same data.varlen.{key}")
        super().load_state_dict(state)  # mode, shards, cursor
        if state["micro"] and state["world"] != self.world:
            raise DataError(f"loader state was saved in the middle of a step at world size {state['world']}; "
                            f"resume it at that world size (this run: {self.world}), or from a step boundary")
        self.micro, self._tables = 0, {}
        self.set_sizes(int(state["rank_tokens"]), int(state["max_doc_len"]))
        self.quick_left = int(state["quick_left"])
        if state["micro"]:
            self._from = (self.shard, self.pos, self.epoch, self.quick_left)
            self._step = self._plan_step()
            self.micro = int(state["micro"])


class VarlenValidation:
    """This rank's validation micro-steps as the records build them (align_to_bos=False), 8-GPU order.

    The val shards are read contiguously: global step g reads V * L' tokens (L' = val_rank_tokens, +1
    for the shifted targets) from a position that moves by V * L' per step; before each step, if
    position + V * L' + 1 >= the shard's length, the step starts at the next shard's token 0. Virtual
    rank v reads its L' + 1 tokens at position + v * L'. cu_seqlens: 0, then the positions of BOS in
    inputs (a BOS at position 0 gives a second 0, as in the scripts), padded with L' to M.
    Micro-step a of rank r is virtual rank a * w + r, so a rank yields (V / w) * val_tokens / (V * L')
    micro-steps: the scripts' val_steps. Re-iterable; the same tokens at every evaluation.
    """

    def __init__(self, files: list[Path], val_tokens: int, val_rank_tokens: int, rank: int = 0, world: int = 1, *,
                 virtual_ranks: int = 8, vocab_size: int = 0, bos: int = EOT_TOKEN):
        _check_world(rank, world, virtual_ranks)
        if val_rank_tokens < 1:
            raise DataError(f"data.varlen.val_rank_tokens must be >= 1, got {val_rank_tokens}")
        span = virtual_ranks * val_rank_tokens
        if val_tokens <= 0 or val_tokens % span:
            raise DataError(f"train.val_tokens={val_tokens} must be a positive multiple of data.varlen.virtual_ranks "
                            f"{virtual_ranks} x data.varlen.val_rank_tokens {val_rank_tokens} = {span}")
        self.rank, self.world, self.virtual_ranks, self.bos = rank, world, virtual_ranks, bos
        self.L, self.accum_steps = val_rank_tokens, virtual_ranks // world
        self.shards = [open_shard(f) for f in files]
        self.steps: list[tuple[int, int]] = []  # (shard, position) of each global step
        shard, pos = 0, 0
        for _ in range(val_tokens // span):
            if pos + span + 1 >= len(self.shards[shard]):
                shard, pos = shard + 1, 0
                if shard == len(self.shards) or span + 1 >= len(self.shards[shard]):
                    raise DataError(f"val shards in {files[0].parent} cannot give train.val_tokens={val_tokens} in "
                                    f"steps of {span} + 1 tokens, each within one shard; lower train.val_tokens or "
                                    "data.varlen.val_rank_tokens, or add val data")
            check_vocab(self.shards[shard][pos:pos + span + 1], vocab_size, files[shard])
            self.steps.append((shard, pos))
            pos += span

    def __len__(self) -> int:
        return len(self.steps) * self.accum_steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for shard, pos in self.steps:
            for micro in range(self.accum_steps):
                start = pos + (micro * self.world + self.rank) * self.L
                buf = np.asarray(self.shards[shard][start:start + self.L + 1])
                inputs = buf[:-1].astype(np.int32)
                yield (torch.from_numpy(inputs), torch.from_numpy(buf[1:].astype(np.int64)),
                       padded_cu_seqlens(np.flatnonzero(inputs == self.bos), self.L))
