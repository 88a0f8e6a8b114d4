"""Open train shards one after another, the next one prepared in a background thread.

A loader walks its shards in order. `ShardCache.get(i)` returns shard i's tokens
(a read-only uint16 memmap) and starts preparing shard i+1 on a daemon thread:
validating its header, checking a sample of token ids against the vocabulary,
reading the file once so its pages sit in the OS page cache (ranks on one node
share them), and running the loader's `prepare` hook (the BOS loader indexes
document starts there). Crossing a shard boundary then costs no I/O and no
scan in the training loop. Errors in the background surface, with the file
named, when that shard is needed.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from data.shards import ShardError, open_shard, read_header

VOCAB_SAMPLE_WINDOWS = 16  # evenly spaced windows of ...
VOCAB_SAMPLE_TOKENS = 8192  # ... tokens each, checked at open (the whole shard when smaller)
_WARM_CHUNK = 16 << 20


def check_vocab(tokens: np.ndarray, vocab_size: int, path: Path | str) -> None:
    """Raise ShardError if a sample of `tokens` holds an id >= vocab_size.

    Checks VOCAB_SAMPLE_WINDOWS evenly spaced windows (start and end included), so
    a shard of another tokenizer is caught at open for almost no I/O.
    """
    n = len(tokens)
    if n == 0 or vocab_size <= 0:
        return
    w = min(VOCAB_SAMPLE_TOKENS, n)
    starts = np.unique(np.linspace(0, n - w, num=VOCAB_SAMPLE_WINDOWS).astype(np.int64))
    for s in starts:
        window = np.asarray(tokens[s:s + w])
        if int(window.max()) >= vocab_size:
            i = int(s + np.argmax(window >= vocab_size))
            raise ShardError(f"shard {path} holds token id {int(tokens[i])} >= vocab size {vocab_size} (token {i}): "
                             "it was not tokenized with this vocabulary; re-tokenize it (python -m data.tokenize) "
                             "or set data.vocab_check to the right vocab size")


def _warm(path: Path) -> None:
    """Read the whole file once (GIL released during reads) so its pages are cached."""
    buf = bytearray(_WARM_CHUNK)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


class ShardCache:
    """Shards by index; shard i+1 is prepared in the background when shard i is fetched.

    `prepare(tokens) -> Any` runs on every shard (in the background thread when
    prefetching); `get(i)` returns (tokens, prepared).
    """

    def __init__(self, files: list[Path], vocab_size: int = 0, prefetch: bool = True,
                 prepare: Callable[[np.ndarray], Any] | None = None):
        self.files = list(files)
        self.sizes = [read_header(f).num_tokens for f in self.files]  # validates every header up front
        self.vocab_size, self.prefetch, self.prepare = vocab_size, prefetch, prepare
        self._open: dict[int, tuple] = {}
        self._pending: dict[int, Future] = {}

    def _load(self, i: int, warm: bool) -> tuple[np.ndarray, Any]:
        path = self.files[i]
        tokens = np.asarray(open_shard(path))  # still memory-mapped; plain ndarray slicing is faster
        if len(tokens) != self.sizes[i]:
            raise ShardError(f"shard {path} changed while training ({self.sizes[i]} -> {len(tokens)} tokens); "
                             "do not modify shards during a run")
        check_vocab(tokens, self.vocab_size, path)
        if warm:
            try:
                _warm(path)
            except OSError as e:
                raise ShardError(f"cannot read shard {path}: {e.strerror or e}") from e
        return tokens, (self.prepare(tokens) if self.prepare else None)

    def _start(self, i: int) -> None:
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(self._load(i, warm=True))
            except BaseException as e:  # noqa: BLE001 - re-raised in the training thread by get()
                future.set_exception(e)

        threading.Thread(target=run, name=f"shard-prefetch-{i}", daemon=True).start()
        self._pending[i] = future

    def get(self, i: int) -> tuple[np.ndarray, Any]:
        n = len(self.files)
        if i in self._open:
            value = self._open.pop(i)
        else:
            future = self._pending.pop(i, None)
            value = future.result() if future is not None else self._load(i, warm=False)
        self._open[i] = value  # most recent last; a read may straddle two shards, keep both
        while len(self._open) > 2:
            self._open.pop(next(iter(self._open)))
        ahead = {(i + 1) % n, (i + 2) % n}
        for j in [j for j in self._pending if j not in ahead]:  # after a jump (load_state_dict)
            self._pending.pop(j)
        nxt = (i + 1) % n
        if self.prefetch and n > 1 and nxt not in self._open and nxt not in self._pending:
            self._start(nxt)
        return value
