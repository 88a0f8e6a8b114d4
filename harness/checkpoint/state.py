"""The small parts of a checkpoint besides model and optimizer: the config fingerprint that decides
whether a checkpoint may be resumed (and names the keys that differ) and per-rank RNG states.

Everything here is plain data (str, int, float, lists, dicts, tensors) for torch.load(weights_only=True).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from enum import Enum
from typing import Any

import numpy as np
import torch

from harness.config.schema import Config

# ---- configs: what must match to resume ----------------------------------------------------------

def _plain(obj: Any) -> Any:
    """Dataclasses / enums / tuples -> JSON-able dicts, strings and lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_optim_config(cfg: Config) -> dict:
    """The keys a checkpoint must agree on: every model.* and optim.* value (flat, JSON-able)."""
    return _flatten({"model": _plain(cfg.model), "optim": _plain(cfg.optim)})


def model_optim_defaults(cfg: Config) -> dict:
    """The schema defaults of model.* and optim.* (flat), for keys a checkpoint predates: {} if a schema
    cannot be built without arguments."""
    try:
        return _flatten({"model": _plain(type(cfg.model)()), "optim": _plain(type(cfg.optim)())})
    except TypeError:
        return {}


def run_config(cfg: Config) -> dict:
    """Keys that may change on resume (with a warning): train.*, data.*, seed."""
    return _flatten({"train": _plain(cfg.train), "data": _plain(cfg.data), "seed": cfg.seed})


def config_hash(flat: dict) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(saved: dict, now: dict, defaults: dict | None = None) -> list[str]:
    """'key (checkpoint A, now B)' for every key whose value differs or exists on one side only.

    A key the checkpoint lacks that is now at its schema default (`defaults`) is no difference: it was added
    to the code since, and a new key's default is the behavior from before it (every stage is off by
    default, every new rate rule is null). Most telling first: a changed optimizer/model *name*, then values
    both sides have, then keys only one side has (which follow from a changed name, or from newer code)."""
    missing = "<absent>"
    defaults = defaults or {}
    keys = [k for k in set(saved) | set(now) if saved.get(k, missing) != now.get(k, missing)
            and not (k not in saved and k in defaults and now.get(k, missing) == defaults[k])]
    keys.sort(key=lambda k: (not k.endswith(".name"), not (k in saved and k in now), k))
    return [f"{k} (checkpoint {saved.get(k, missing)!r}, now {now.get(k, missing)!r})" for k in keys]


# ---- per-rank state ----------------------------------------------------------------------------

def rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
