"""Every key of the composed config must be a field of its schema.

The schemas (harness/config/schema.py and the groups' dataclasses) reject an unknown key in a YAML file or
an override, but Hydra's `+key=value` adds a key to a structured config regardless: a typo such as
`+train.max_step=10` would be stored in config.yaml and silently ignored. `check_known_keys` walks
the composed config and names the first such key with the closest valid one.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf


def closest_key(full_key: str, schema: type | None) -> str | None:
    """The field of `schema` nearest to the last part of `full_key`, as a full key (or None)."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    prefix, _, key = full_key.rpartition(".")
    names = [f.name for f in dataclasses.fields(schema)]
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    return f"{prefix + '.' if prefix else ''}{match[0]}" if match else None


def unknown_key_message(full_key: str, schema: type | None, added: bool) -> str:
    """One line: the unknown key, the closest valid key, and where to see them all."""
    near = closest_key(full_key, schema)
    hint = f"did you mean {near}?" if near else "no valid key is close"
    how = "every valid key already exists, so no override needs `+`; " if added else ""
    return f"unknown config key {full_key} ({hint}): {how}`python train.py --cfg job` prints every key"


def _unknown(node: DictConfig, prefix: str) -> Iterator[tuple[str, type]]:
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return  # a free-form dict field: any key is allowed
    fields = {f.name for f in dataclasses.fields(schema)}
    for key in node.keys():
        full = f"{prefix}{key}"
        if key not in fields:
            yield full, schema
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            yield from _unknown(child, full + ".")


def check_known_keys(cfg: DictConfig) -> None:
    """Raise ValueError naming the first key of `cfg` that its schema does not have."""
    for full_key, schema in _unknown(cfg, ""):
        raise ValueError(unknown_key_message(full_key, schema, added=True))
