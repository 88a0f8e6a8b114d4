"""Synthetic token shards from a fixed random Markov chain (tests and the smoke run)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data.config import SyntheticConfig
from data.shards import find_shards, write_shard


def markov_tokens(cfg: SyntheticConfig, n_tokens: int, stream_seed: int) -> np.ndarray:
    """n_tokens ids (uint16) from the chain defined by cfg.seed; stream_seed picks the sample path.

    Token ids are 0..vocab-1 plus cfg.bos_token at each document start.
    """
    chain = np.random.default_rng(cfg.seed)
    successors = chain.integers(0, cfg.vocab, size=(cfg.vocab, cfg.branching))
    probs = chain.dirichlet(np.ones(cfg.branching))
    rng = np.random.default_rng([cfg.seed, stream_seed])
    # Sample the branch choices and document ends vectorized; only the state walk is sequential.
    branch = rng.choice(cfg.branching, size=n_tokens, p=probs)
    new_doc = rng.random(n_tokens) < 1.0 / cfg.mean_doc_len
    starts = rng.integers(0, cfg.vocab, size=n_tokens)
    out = np.empty(n_tokens, dtype=np.uint16)
    state = -1
    succ = successors.tolist()
    for i, (b, nd, s) in enumerate(zip(branch.tolist(), new_doc.tolist(), starts.tolist())):
        if state < 0:
            out[i], state = s, s
        elif nd or i == 0:
            out[i], state = cfg.bos_token, -1
        else:
            state = succ[state][b]
            out[i] = state
    out[0] = cfg.bos_token  # every shard starts at a document boundary
    return out


def ensure_synthetic_shards(directory: str | Path, cfg: SyntheticConfig) -> Path:
    """Write fineweb_val_000000.bin and fineweb_train_000001.bin into `directory` unless present.

    Deterministic in cfg, and written atomically, so concurrent callers (several
    ranks on one node) at worst write the same bytes twice.
    """
    directory = Path(directory)
    val = directory / "fineweb_val_000000.bin"
    train = directory / "fineweb_train_000001.bin"
    if not val.exists():
        write_shard(val, markov_tokens(cfg, cfg.val_tokens, stream_seed=0))
    if not find_shards(directory, "fineweb_train_*.bin"):
        write_shard(train, markov_tokens(cfg, cfg.train_tokens, stream_seed=1))
    return directory
