"""Data configuration schema (Hydra group `data`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class SyntheticConfig:
    """A fixed random Markov chain written as shards: learnable, deterministic, offline.

    Each of `vocab` content token ids (0..vocab-1) has `branching` possible successors
    (chosen once from `seed`), so a model that learns the context reaches about
    log(branching) nats while a unigram model stays near log(vocab). Documents
    start with `bos_token` (50256, GPT-2's <|endoftext|>, by default; a smaller id
    lets a small-vocabulary model train on it) and end with probability
    1/`mean_doc_len` per token.
    """

    vocab: int = 512
    bos_token: int = 50256
    branching: int = 4
    train_tokens: int = 1_000_000
    val_tokens: int = 131_072
    mean_doc_len: int = 256
    seed: int = 1234

    def check(self) -> None:
        for key in ("vocab", "branching", "train_tokens", "val_tokens", "mean_doc_len"):
            if getattr(self, key) <= 0:
                raise ValueError(f"data.synthetic.{key} must be > 0 (got {getattr(self, key)})")
        if not self.branching <= self.vocab <= self.bos_token < 2**16:
            raise ValueError(f"data.synthetic needs branching <= vocab <= bos_token < 65536 "
                             f"(got {self.branching}, {self.vocab}, {self.bos_token})")


@dataclass
class DataConfig:
    """Where the token shards are. `dir` holds `fineweb_val_*.bin` and `fineweb_train_*.bin`.

    With `synthetic` set, the shards are generated into `dir` on first use.
    """

    dir: str = ""
    train_pattern: str = "fineweb_train_*.bin"
    val_pattern: str = "fineweb_val_*.bin"
    synthetic: Optional[SyntheticConfig] = None

    def check(self) -> None:
        if self.synthetic is not None:
            self.synthetic.check()
