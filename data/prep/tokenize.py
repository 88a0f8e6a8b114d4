"""Tokenize a corpus into speedrun shards (GPT-2 BPE, every document prefixed by <|endoftext|>).

    python -m data.prep.tokenize SOURCE (--val-docs N | --val-frac F) [--out DIR] [--shard-tokens N]
                                 [--txt-split file|paragraph|line] [--bpe FILE] [--workers K]

SOURCE is a .jsonl/.txt/.parquet file, a folder of them, or hf:NAME[:CONFIG]
(see data/prep/sources.py); DIR defaults to outputs/data/NAME (git-ignored), NAME the source's
file or dataset name. The sharding rule (the one of the speedrun's published shards,
reproduced byte for byte on the FineWeb sample):

- documents are read in order; each becomes [50256] + GPT-2 tokens of its text;
- the first N documents, whole, form `{prefix}_val_000000.bin` (any size); --val-frac F
  takes N = round(F x documents), at least 1 (local sources: they are counted first);
- the remaining documents form one token stream, cut into train shards of exactly
  `--shard-tokens` tokens (`{prefix}_train_000001.bin`, ...), so a document may
  straddle two shards; the last shard holds the remainder.

Output never depends on the number of workers: workers encode chunks of documents
and results are consumed strictly in submission order. At most a few chunks per
worker are in flight, so a streamed 10B-token dataset never sits in memory.
Shards are written atomically into a staging folder inside DIR and moved into
place only once the whole corpus is done, so an error or Ctrl-C leaves DIR as it
was (and removes it again if this run created it); existing shards are never
written over unless --overwrite is given. An empty corpus, or one that would give
no validation or no training shard, is an error. `tokenizer.json` beside the
shards records the tokenizer that made them (data/tokenizer.py), where
inference.sample and evals.hellaswag find it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import exit_codes
from common.atomic_io import write_text_atomic
from common.paths import REPO
from common.tokens import EOT_TOKEN
from data.prep.sources import TXT_SPLITS, SourceError, iter_documents
from data.shards import TOKEN_DTYPE, ShardError, write_shard
from data.tokenizer import RECORD_FILE, TokenizerError, gpt2_encoding_with_source, tokenizer_record

CHUNK_DOCS = 64  # documents per task sent to a worker
IN_FLIGHT_PER_WORKER = 4  # chunks queued per worker: keeps workers busy, bounds memory

_ENCODING = None  # the worker's tiktoken Encoding, set by _init_worker


class TokenizeError(ValueError):
    """Bad arguments or an output folder that cannot be written as asked."""


def _init_worker(bpe: str | None) -> None:
    global _ENCODING
    _ENCODING = gpt2_encoding_with_source(bpe)[0]


def encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Documents -> (their tokens concatenated, uint16; per-document token counts, int64).

    Each document is prefixed by <|endoftext|>; special-token text inside documents is
    encoded as ordinary text, never as 50256.
    """
    pieces = [_ENCODING.encode_ordinary(t) for t in texts]
    lengths = np.fromiter((len(p) + 1 for p in pieces), dtype=np.int64, count=len(pieces))
    out = np.empty(int(lengths.sum()), dtype=TOKEN_DTYPE)
    pos = 0
    for p in pieces:
        out[pos] = EOT_TOKEN
        out[pos + 1:pos + 1 + len(p)] = p
        pos += len(p) + 1
    return out, lengths


def _encoded_chunks(docs: Iterable[str], workers: int, bpe: str | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """encode_chunk over consecutive chunks of `docs`, results in input order."""
    docs_iter = iter(docs)
    chunks = iter(lambda: list(itertools.islice(docs_iter, CHUNK_DOCS)), [])
    if workers <= 1:
        _init_worker(bpe)
        yield from map(encode_chunk, chunks)
        return
    # spawn, not fork: the parent has threads (tqdm monitor, prefetch) whose locks a fork could copy held
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(bpe,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(encode_chunk, (chunk,)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@dataclass
class _ShardSink:
    """Receives the token stream; writes the val shard, then fixed-size train shards."""

    folder: Path
    prefix: str
    val_docs: int
    shard_tokens: int
    docs: int = 0
    tokens: int = 0
    val_parts: list = field(default_factory=list)
    written: list = field(default_factory=list)  # (name, num_tokens)

    def __post_init__(self) -> None:
        self.buf = np.empty(self.shard_tokens, dtype=TOKEN_DTYPE)
        self.fill = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        self.tokens += len(tokens)
        if self.docs < self.val_docs:  # part (or all) of this chunk belongs to validation
            n_val = min(len(lengths), self.val_docs - self.docs)
            cut = int(lengths[:n_val].sum())
            self.val_parts.append(tokens[:cut])
            self.docs += n_val
            if self.docs == self.val_docs:
                self._write(f"{self.prefix}_val_{0:06d}.bin", np.concatenate(self.val_parts))
                self.val_parts = []
            tokens, lengths = tokens[cut:], lengths[n_val:]
        self.docs += len(lengths)
        while len(tokens):
            take = min(len(tokens), self.shard_tokens - self.fill)
            self.buf[self.fill:self.fill + take] = tokens[:take]
            self.fill += take
            tokens = tokens[take:]
            if self.fill == self.shard_tokens:
                self._flush()

    def _flush(self) -> None:
        index = sum(1 for name, _ in self.written if "_train_" in name) + 1
        self._write(f"{self.prefix}_train_{index:06d}.bin", self.buf[:self.fill])
        self.fill = 0

    def _write(self, name: str, tokens: np.ndarray) -> None:
        write_shard(self.folder / name, tokens)
        self.written.append((name, len(tokens)))

    def finish(self, source: str, split_hint: str) -> None:
        if self.docs == 0:
            raise TokenizeError(f"{source} holds no text: no document to tokenize{split_hint}")
        if self.docs < self.val_docs:
            raise TokenizeError(f"{source} has only {self.docs} document{'s' if self.docs != 1 else ''}{split_hint}, "
                                f"fewer than --val-docs "
                                f"{self.val_docs}; lower --val-docs or use --val-frac F")
        if self.fill:
            self._flush()
        if not any("_train_" in name for name, _ in self.written):
            raise TokenizeError(f"{source} has {self.docs} documents and --val-docs {self.val_docs} takes them all"
                                f"{split_hint}: no training tokens; lower --val-docs")


def _existing_shards(out: Path, prefix: str) -> list[Path]:
    return sorted(out.glob(f"{prefix}_val_*.bin")) + sorted(out.glob(f"{prefix}_train_*.bin"))


def default_out(source: str) -> Path:
    """outputs/data/NAME under the repository (git-ignored): NAME is the file's stem or the dataset's name."""
    if source.startswith("hf:"):
        name = source[3:].replace("/", "_").replace(":", "_")
    else:
        name = Path(source.rstrip("/")).name.split(".")[0]
    return REPO / "outputs" / "data" / (name or "corpus")


def _count_docs(source: str, text_field: str, txt_split: str, max_docs: int | None) -> int:
    if source.startswith("hf:"):
        raise TokenizeError("--val-frac counts the documents first, which a streamed hf: dataset cannot do: "
                            "pass --val-docs N")
    docs = iter_documents(source, text_field=text_field, txt_split=txt_split)
    return sum(1 for _ in itertools.islice(docs, max_docs))


def _val_docs_from_frac(val_frac: float, n_docs: int, source: str, txt_split: str) -> int:
    if not 0 < val_frac < 1:
        raise TokenizeError(f"--val-frac must lie in (0, 1), got {val_frac}")
    if n_docs < 2:
        raise TokenizeError(f"{source} has {n_docs} document{'s' if n_docs != 1 else ''} (--txt-split {txt_split}): "
                            "a validation and a training shard need at least 2; use --txt-split paragraph or line")
    return min(max(1, round(val_frac * n_docs)), n_docs - 1)


def _missing_parents(out: Path) -> list[Path]:
    """`out` and those of its ancestors that do not exist yet, deepest first (removed again on an error)."""
    return [p for p in (out, *out.parents) if not p.exists()]


def tokenize_corpus(source: str, out: str | Path | None, val_docs: int | None, shard_tokens: int, *,
                    val_frac: float | None = None, bpe: str | None = None, workers: int = 1, prefix: str = "fineweb",
                    text_field: str = "text", txt_split: str = "file", split: str = "train",
                    max_docs: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Tokenize `source` into shards in `out` (None: default_out); return a summary (docs, tokens, seconds,
    shards). Exactly one of val_docs / val_frac."""
    if (val_docs is None) == (val_frac is None):
        raise TokenizeError("give one of --val-docs N (the first N documents validate) or --val-frac F")
    if val_docs is not None and val_docs < 1:
        raise TokenizeError(f"--val-docs must be >= 1 (the trainer needs a validation shard), got {val_docs}")
    if shard_tokens < 1:
        raise TokenizeError(f"--shard-tokens must be >= 1, got {shard_tokens}")
    if workers < 1:
        raise TokenizeError(f"--workers must be >= 1, got {workers}")
    out = Path(out).expanduser() if out is not None else default_out(source)
    existing = _existing_shards(out, prefix) if out.is_dir() else []
    if existing and not overwrite:
        raise TokenizeError(f"{out} already holds shards ({existing[0].name}, ...): choose an empty --out "
                            "or pass --overwrite to replace them")
    _, tokenizer_source = gpt2_encoding_with_source(bpe)  # fail early, in one place, if there is no tokenizer
    docs = iter_documents(source, text_field=text_field, txt_split=txt_split, split=split)
    if max_docs is not None:
        docs = itertools.islice(docs, max_docs)
    if val_frac is not None:
        val_docs = _val_docs_from_frac(val_frac, _count_docs(source, text_field, txt_split, max_docs), source,
                                       txt_split)
    created = _missing_parents(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tokenize-staging-", dir=out))
    sink = _ShardSink(staging, prefix, val_docs, shard_tokens)
    t0 = time.perf_counter()
    done = False
    try:
        from tqdm import tqdm

        with tqdm(desc=f"tokenizing ({tokenizer_source})", unit=" docs", disable=not progress,
                  dynamic_ncols=True) as bar:
            for tokens, lengths in _encoded_chunks(docs, workers, bpe):
                sink.add(tokens, lengths)
                bar.update(len(lengths))
                bar.set_postfix(tokens=f"{sink.tokens:,}", refresh=False)
        one_txt = source.lower().endswith((".txt", ".txt.gz")) and txt_split == "file"
        sink.finish(source, " (--txt-split file: one document per file; a one-file corpus needs --txt-split "
                            "paragraph or line)" if one_txt else "")
        seconds = time.perf_counter() - t0
        record = {**tokenizer_record(bpe), "corpus": source, "txt_split": txt_split, "val_docs": val_docs,
                  "docs": sink.docs, "tokens": sink.tokens}
        write_text_atomic(staging / RECORD_FILE, json.dumps(record, indent=1) + "\n")
        for name in [name for name, _ in sink.written] + [RECORD_FILE]:
            (staging / name).replace(out / name)
        new = {name for name, _ in sink.written}
        for stale in existing:  # left over from a longer previous run: would mix into training
            if stale.name not in new:
                stale.unlink()
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:  # the folders this run created go again: an error leaves no empty --out behind
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:  # not empty (another process wrote there) or already gone
                    break
    return {"docs": sink.docs, "tokens": sink.tokens, "seconds": seconds, "shards": sink.written,
            "tokenizer": tokenizer_source, "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data.prep.tokenize", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a .jsonl/.txt/.parquet file, a folder of them, or hf:NAME[:CONFIG]")
    p.add_argument("--out", default=None, help="output folder for the shards (default outputs/data/NAME, "
                                                "git-ignored; NAME: the source's file or dataset name)")
    val = p.add_mutually_exclusive_group(required=True)
    val.add_argument("--val-docs", type=int, help="the first N documents form the val shard")
    val.add_argument("--val-frac", type=float, help="the first round(F x documents) form it (local sources)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per train shard (default 1e8)")
    p.add_argument("--bpe", default=None, help="GPT-2 BPE file (.tiktoken, or encoder.json beside vocab.bpe)")
    p.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1),
                   help="encoding processes (default: cores - 1)")
    p.add_argument("--prefix", default="fineweb", help="shard name prefix (default fineweb)")
    p.add_argument("--text-field", default="text", help="JSON field / parquet column / dataset column of the text")
    p.add_argument("--txt-split", choices=TXT_SPLITS, default="file",
                   help=".txt: one document per file (default), per paragraph (blank-line separated) or per line")
    p.add_argument("--split", default="train", help="split of an hf: dataset (default train)")
    p.add_argument("--max-docs", type=int, default=None, help="stop after this many documents")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    def run() -> int:
        summary = tokenize_corpus(args.source, args.out, args.val_docs, args.shard_tokens, val_frac=args.val_frac,
                                  bpe=args.bpe, workers=args.workers, prefix=args.prefix, text_field=args.text_field,
                                  txt_split=args.txt_split, split=args.split, max_docs=args.max_docs,
                                  overwrite=args.overwrite, progress=not args.no_progress)
        s = summary["seconds"]
        print(f"{summary['docs']:,} docs, {summary['tokens']:,} tokens in {s:.1f} s "
              f"({summary['docs'] / s:,.0f} docs/s, {summary['tokens'] / s:,.0f} tokens/s, {args.workers} workers)")
        for name, n in summary["shards"]:
            print(f"  {summary['out']}/{name}: {n:,} tokens")
        print(f"tokenizer recorded in {summary['out']}/{RECORD_FILE}; train with data.dir={summary['out']}")
        return exit_codes.OK

    return exit_codes.run_command(run, (TokenizeError, SourceError, TokenizerError, ShardError, OSError),
                                  f"nothing was written to {args.out or 'the output folder'}")


if __name__ == "__main__":
    sys.exit(main())
