"""BOS-aligned train loader: every sequence starts at a document start.

Later speedrun records align each training sequence to a document start
(<|endoftext|> = 50256, which begins every document in the shards) so no
sequence opens mid-document, and cap document length so one long document
cannot fill a whole batch. Rows are built like this (T = seq_len):

- a row holds T+1 tokens (inputs = row[:-1], targets = row[1:]) and starts at the
  current document;
- documents are appended whole, each cut to at most `max_doc_len` tokens (the
  rest of a longer document is skipped), until the row is full; the document
  that overflows the row is cut there and the rest of it is skipped too: the next
  row starts at the next document;
- documents do not cross shards: the tail of a shard's last document and the
  tokens before a shard's first 50256 are skipped; when a shard has too few
  document tokens left for a row, the row starts in the next shard.

Rows form one global sequence that does not depend on world size or batch shape.
A global micro-step takes its next world*B rows and rank r materializes rows
[r*B, (r+1)*B); every rank computes the (cheap, index-only) packing of all of
them. So world=1 with accumulation 2 sees the rows of world=2 with accumulation
1, as in contiguous mode. `model.masks.document_ids(inputs, bos)` gives the document
index of every position for document-causal attention masks.

The document index of a shard (start positions of 50256) is built in the
prefetch thread, so crossing into a new shard does not stall training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from common.tokens import EOT_TOKEN
from data.loader import DataError, _check_shape, _StreamState
from data.prefetch import ShardCache


@dataclass(frozen=True)
class DocIndex:
    """One shard's documents, packed into rows of `row` tokens (D documents)."""

    starts: np.ndarray  # int64 [D]: position of each document's 50256
    clen: np.ndarray  # int64 [D]: min(document length, cap)
    cum: np.ndarray  # int64 [D+1]: cum[i] = clen[:i].sum()
    nxt: list[int]  # [D]: a row starting at document d uses documents d..nxt[d]-1; nxt[d] > D: no room left
    nxt_np: np.ndarray  # the same as an array
    one_slice: np.ndarray  # bool [D]: that row is tokens[starts[d]:starts[d]+row] (no cap cut inside)


def index_documents(tokens: np.ndarray, row: int, cap: int, bos: int = EOT_TOKEN) -> DocIndex:
    """Find document starts and pack rows for every possible first document, vectorized."""
    starts = np.flatnonzero(np.asarray(tokens) == bos).astype(np.int64)
    lengths = np.diff(starts, append=len(tokens))
    clen = np.minimum(lengths, cap)
    cum = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(clen, out=cum[1:])
    nxt = np.searchsorted(cum, cum[:-1] + row, side="left")  # == D + 1 when the shard runs out
    cuts = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(clen < lengths, out=cuts[1:])
    last = np.minimum(nxt, len(starts)) - 1  # the row's last document (cut by the row end anyway)
    one_slice = cuts[np.maximum(last, 0)] - cuts[np.arange(len(starts))] == 0
    return DocIndex(starts, clen, cum, nxt.tolist(), nxt, one_slice)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), without a Python loop."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(ends) else 0)


class BOSAlignedLoader(_StreamState):
    """Endless stream of BOS-aligned (inputs, targets) micro-batches, int64 [B, T], for one rank.

    State: `pos` is the index of the next row's first document within shard `shard`.
    """

    mode = "bos"

    def __init__(self, files: list[Path], micro_batch_seqs: int, seq_len: int, rank: int = 0, world: int = 1,
                 max_doc_len: int = 0, vocab_size: int = 0, prefetch: bool = True, bos: int = EOT_TOKEN):
        _check_shape(micro_batch_seqs, seq_len, rank, world)
        if max_doc_len < 0:
            raise DataError(f"data.bos_max_doc_len must be >= 0 (0 = no cap), got {max_doc_len}")
        self.B, self.T, self.rank, self.world, self.bos = micro_batch_seqs, seq_len, rank, world, bos
        self.row = seq_len + 1
        self.cap = max_doc_len or self.row  # a document longer than a row is cut by the row anyway
        self._init_state(ShardCache(files, vocab_size, prefetch,
                                    prepare=lambda t: index_documents(t, self.row, self.cap, bos)))
        total = sum(self.cache.sizes)
        need = world * micro_batch_seqs * self.row
        if total < need:
            raise DataError(f"train shards hold {total} tokens, fewer than one global micro-batch of {need} "
                            f"(world {world} x micro_batch_seqs {micro_batch_seqs} x (seq_len {seq_len} + 1)) "
                            f"in {self.cache.files[0].parent}; lower micro_batch_seqs or seq_len, or add data")
        self.cache.get(0)  # check shard 0 now, start prefetching shard 1

    def _next_rows(self, count: int) -> list[tuple[int, int]]:
        """The next `count` rows of the global sequence as (shard, first document); advance the cursor."""
        rows: list[tuple[int, int]] = []
        start_shard, start_epoch = self.shard, self.epoch
        while True:
            _, docs = self.cache.get(self.shard)
            nxt, n_docs, d = docs.nxt, len(docs.nxt), self.pos
            while len(rows) < count and d < n_docs and nxt[d] <= n_docs:
                rows.append((self.shard, d))
                d = nxt[d]
            self.pos = d
            if len(rows) == count:
                return rows
            self.shard, self.pos = (self.shard + 1) % len(self.cache.files), 0  # shard exhausted
            self.epoch += self.shard == 0
            if self.shard == start_shard and self.epoch > start_epoch + 1:
                raise DataError(f"no row of {self.row} document tokens (documents start with token {self.bos}) in any "
                                f"train shard in {self.cache.files[0].parent}: BOS-aligned mode needs documents "
                                "prefixed by <|endoftext|>; use data.mode=contiguous or re-tokenize")

    def _materialize(self, rows: list[tuple[int, int]]) -> np.ndarray:
        """Rows (shard, first document) -> int64 [len(rows), T+1]: one gather for all one-slice rows."""
        out = np.empty((len(rows), self.row), dtype=np.int64)
        for shard in sorted({s for s, _ in rows}):
            tokens, docs = self.cache.get(shard)
            which = [i for i, (s, _) in enumerate(rows) if s == shard]
            first = np.array([rows[i][1] for i in which], dtype=np.int64)
            simple = docs.one_slice[first]
            if simple.any():
                windows = sliding_window_view(tokens, self.row)  # [N-row+1, row] view, no copy
                out[np.array(which)[simple]] = windows[docs.starts[first[simple]]]
            if not simple.all():  # rows with capped documents inside: one vectorized gather of the kept ranges
                f = first[~simple]
                last = docs.nxt_np[f]  # each row uses documents f..last-1
                k = _ranges(f, last - f)  # all those documents, row after row
                positions = _ranges(docs.starts[k], docs.clen[k])  # their kept tokens, concatenated
                totals = docs.cum[last] - docs.cum[f]
                row_begin = np.cumsum(totals) - totals
                out[np.array(which)[~simple]] = tokens[positions[row_begin[:, None] + np.arange(self.row)]]
        return out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._next_rows(self.world * self.B)
        buf = self._materialize(rows[self.rank * self.B:(self.rank + 1) * self.B])
        self.cache.get(self.shard)  # keep the next shard prefetching ahead of the cursor
        t = torch.from_numpy(buf)
        return t[:, :-1], t[:, 1:]
