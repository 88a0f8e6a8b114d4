"""Open train shards one after another, the next one prepared in a background thread.

A loader walks its shards in order. `ShardCache.get(i)` returns shard i's tokens
(a read-only uint16 memmap) and starts preparing shard i+1 on a daemon thread:
validating its header, checking every token id against the vocabulary (which
reads the file once, so its pages sit in the OS page cache; ranks on one node
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

VOCAB_CHECK_CHUNK = 1 << 24  # tokens per np.max pass (32 MiB of uint16): one read of the shard, bounded memory
_WARM_CHUNK = 16 << 20


def check_vocab(tokens: np.ndarray, vocab_size: int, path: Path | str) -> None:
    """Raise ShardError, naming the file, the position and the fix, if any id in `tokens` is >= vocab_size.

    Checks every token (a chunked max: ~12 ms per 100M tokens in the page cache; for a train shard
    it runs in the prefetch thread, which reads the shard anyway), so a shard of another tokenizer,
    or one bad id anywhere in it, stops the run before that shard is trained on, not with an
    IndexError in the embedding many steps later.
    """
    n = len(tokens)
    if n == 0 or vocab_size <= 0:
        return
    for start in range(0, n, VOCAB_CHECK_CHUNK):
        chunk = np.asarray(tokens[start:start + VOCAB_CHECK_CHUNK])
        if int(chunk.max()) >= vocab_size:
            i = start + int(np.argmax(chunk >= vocab_size))
            raise ShardError(f"shard {path} holds token id {int(tokens[i])} >= vocab size {vocab_size} at token {i:,} "
                             f"of {n:,}: it was not tokenized with this vocabulary; re-tokenize it (python -m "
                             f"data.prep.tokenize), or, if its vocabulary is larger, set model.vocab_size above {int(tokens[i])}")


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
        check_vocab(tokens, self.vocab_size, path)  # reads every page (when on): the shard is then cached
        if warm and not self.vocab_size:
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
