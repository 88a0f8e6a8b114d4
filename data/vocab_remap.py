"""Shards whose token ids were remapped to a smaller vocabulary, and how a reader tells them apart.

`python -m data.prep.remap` (data/prep/remap.py) keeps a source's K most frequent train token ids,
renumbered 0..K-1 in frequency order, and sends every other id to one catch-all id K: a vocabulary of
K + 1 ids. Its shards are ordinary shards (data/shards.py's header, magic and version); what marks them
is `vocab_remap.json` beside them, which this module reads. A model whose vocabulary is not K + 1 would
read the small ids as GPT-2 tokens (every id passes an "id < vocab" check), so the trainer refuses it
(`check_model_vocab`), and a BOS-aligned loader takes the document separator's new id from the file.

The file (JSON): format "vocab_remap", version 1, source (the source folder), top_k K, catch_all K,
vocab_size K + 1, source_vocab, bos_token (the new id of GPT-2's <|endoftext|> 50256, or K if it was
not kept), kept_ids (source ids in their new order: new id i <- kept_ids[i]), catch_all_fraction (of the
train tokens) and catch_all_fraction_val, train_tokens, val_tokens, and source_shards (name -> sha256
of the source file, its token count).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from data.shards import ShardError

REMAP_FILE = "vocab_remap.json"
FORMAT = "vocab_remap"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RemapInfo:
    """What a reader needs of a remapped folder's `vocab_remap.json`."""
    path: Path
    vocab_size: int   # K + 1: the model's vocabulary on these shards
    catch_all: int    # K: every source id outside the kept K
    bos_token: int    # the new id of <|endoftext|> (the catch-all if it was not kept)
    kept_ids: tuple[int, ...]


def read_remap(directory: str | os.PathLike) -> RemapInfo | None:
    """The remap record of a shard folder, or None for a folder of source (GPT-2) shards.

    Raises ShardError naming the file when it exists but is not a readable remap record.
    """
    path = Path(directory).expanduser() / REMAP_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT or raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"format {raw.get('format')!r} version {raw.get('version')!r}, "
                             f"expected {FORMAT!r} version {FORMAT_VERSION}")
        info = RemapInfo(path, int(raw["vocab_size"]), int(raw["catch_all"]), int(raw["bos_token"]),
                         tuple(int(i) for i in raw["kept_ids"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ShardError(f"{path} is not a readable vocabulary remap record ({e}); remake the folder with "
                         f"python -m data.prep.remap SRC --out {Path(directory)} --overwrite") from e
    if info.catch_all != len(info.kept_ids) or info.vocab_size != info.catch_all + 1:
        raise ShardError(f"{path} is inconsistent (vocab_size {info.vocab_size}, catch_all {info.catch_all}, "
                         f"{len(info.kept_ids)} kept ids); remake the folder with python -m data.prep.remap")
    return info


def check_model_vocab(directory: str | os.PathLike, vocab_size: int) -> RemapInfo | None:
    """Refuse a model vocabulary other than a remapped folder's K + 1 (0 = the vocab check is off).

    Returns the folder's RemapInfo (None for source shards). Raises ShardError in one line naming the fix.
    """
    info = read_remap(directory)
    if info is not None and vocab_size and vocab_size != info.vocab_size:
        raise ShardError(f"data.dir={directory} holds shards remapped to a vocabulary of {info.vocab_size} ids "
                         f"({info.path}), but model.vocab_size is {vocab_size}: set model.vocab_size="
                         f"{info.vocab_size} (experiment=track3_proxy_cpu does), or point data.dir at the source "
                         "shards")
    return info
