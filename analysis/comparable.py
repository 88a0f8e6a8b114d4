"""Whether a run may be judged against a published result, or against the 3.28 target, at all.

A record's loss is a FineWeb validation loss of a model with GPT-2's 50,257-token vocabulary, of one size,
trained on sequences and batches of one size, and its time counts on one track (1: wall-clock time on
8x H100; 3: steps). A run that differs in any of these measures something else: its time ratio to the
record, or its verdict against 3.28, would be a number without meaning (a 512-token synthetic task
reaches a loss of 1.3 in seconds). So compare and significance name every difference (`differences`,
`target_problems`) and refuse, unless --force, where they go on under warnings (`refuse_or_warn`).

What a run was is read from its config.yaml (`setup_of_run`); what a published result was, from its
experiment file (`setup_of_record`: the keys it states, the data group its defaults list chooses, its
reference block's track). A key either side does not know (a speedrun log, a CSV, a run folder without
config.yaml, an experiment without the key) is not compared.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from analysis.records import experiment_node, reference_of
from analysis.runs import CONFIG_FILE, METRICS_FILE, flatten, read_config
from common.paths import CONFIGS
from common.tokens import VOCAB_SIZE

# The keys that decide what a loss and a time mean. "data" is the data group: synthetic (a Markov chain,
# data.synthetic set) or fineweb (token shards); "track" is reference.track of the run's experiment.
SIZE_KEYS = ("model.vocab_size", "model.n_layer", "model.n_head", "model.n_embd", "train.seq_len",
             "train.global_batch_tokens")
SETUP_KEYS = ("data", *SIZE_KEYS, "track")

Setup = dict  # SETUP_KEYS -> value; None where unknown


class NotComparable(ValueError):
    """Runs and a result (or a target) measure different things; the message lists how."""


def setup_of_run(path: str | Path) -> Optional[Setup]:
    """What a run folder's run was (its config.yaml); None for a source without one (a log, a CSV)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        return None
    config = read_config(path)
    data = ("synthetic" if any(k.startswith("data.synthetic.") for k in config)
            else "fineweb" if any(k.startswith("data.") for k in config) else None)
    return {"data": data, **{k: config.get(k) for k in SIZE_KEYS}, "track": config.get("reference.track")}


def _data_group(defaults: list) -> Optional[str]:
    """The data group a defaults list chooses (`data: X` or `override /data: X`), None when it chooses none."""
    for entry in defaults or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.split()[-1].lstrip("/") == "data":
                    return value
    return None


def setup_of_record(experiment: str) -> Setup:
    """What a published result was run on, from configs/experiment/<experiment>.yaml (its data group: its
    own choice, else configs/config.yaml's default)."""
    node = OmegaConf.to_container(experiment_node(experiment))
    stated = flatten({k: v for k, v in node.items() if k in ("model", "train")})
    base = OmegaConf.to_container(OmegaConf.load(CONFIGS / "config.yaml")).get("defaults")
    info = reference_of(experiment)
    return {"data": _data_group(node.get("defaults")) or _data_group(base), **{k: stated.get(k) for k in SIZE_KEYS},
            "track": info.track if info else None}


def setup_of(source: str) -> Optional[Setup]:
    """A run folder's (or its metrics.jsonl's) setup, or a published result's by experiment name; None for
    anything else (a log, a CSV)."""
    path = Path(source)
    if path.is_dir() or path.name == METRICS_FILE:
        return setup_of_run(path if path.is_dir() else path.parent)
    if path.exists():
        return None
    return setup_of_record(source)


def _by_difference(found: dict[str, str]) -> list[str]:
    """{source: what differs} -> one line per distinct difference, naming its sources."""
    lines: dict[str, list[str]] = {}
    for source, what in found.items():
        lines.setdefault(what, []).append(source)
    return [f"{', '.join(sources)}: {what}" for what, sources in lines.items()]


def differences(sources: list[str], record: str) -> list[str]:
    """How the runs (or results) differ from published result `record` (an experiment name): one line per
    distinct difference, naming its runs ("model.n_layer 2 vs 12": the run's value, then the record's); []
    when every key both sides know agrees."""
    ref = setup_of(record)
    found = {}
    for source in sources:
        own = setup_of(source)
        if own is None or ref is None:
            continue
        keys = [k for k in SETUP_KEYS if None not in (own[k], ref[k]) and own[k] != ref[k]]
        if keys:
            found[source] = ", ".join(f"{k} {own[k]} vs {ref[k]}" for k in keys)
    return _by_difference(found)


def target_problems(sources: list[str]) -> list[str]:
    """The runs the default target (a FineWeb loss with GPT-2's vocabulary) means nothing for, and why: one
    line per distinct reason; [] when it may apply to all."""
    found = {}
    for source in sources:
        setup = setup_of(source)
        if setup is None:
            continue
        off = []
        if setup["data"] not in (None, "fineweb"):
            off.append(f"data {setup['data']}")
        if setup["model.vocab_size"] not in (None, VOCAB_SIZE):
            off.append(f"model.vocab_size {setup['model.vocab_size']}")
        if off:
            found[source] = ", ".join(off)
    return _by_difference(found)


def target_refusal(target: float) -> str:
    return (f"refusing to judge these runs against {target}, a FineWeb loss with GPT-2's {VOCAB_SIZE}-token "
            "vocabulary (--target sets a target for your own data)")


def refuse_or_warn(problems: list[str], force: bool, refusal: str) -> None:
    """NotComparable listing `problems` under `refusal`, or with `force` one warning line each on stdout."""
    if problems and not force:
        raise NotComparable(f"{refusal}:\n  - " + "\n  - ".join(problems) + "\n  (pass --force to go on anyway)")
    for problem in problems:
        print(f"WARNING (--force): {problem}")
