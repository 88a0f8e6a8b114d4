"""A run folder of this harness, read in one place: its metrics.jsonl events and its resolved config.

A run folder (train.py's hydra.run.dir) holds
- metrics.jsonl: one JSON event per line, in the order logged (the events are listed in
  harness/telemetry/metrics.py); a crash can leave the last line torn (half written);
- config.yaml: the run's fully resolved config (every default filled in);
- .hydra/overrides.yaml: the command-line overrides, as Hydra recorded them.
A sweep folder (train.py -m's hydra.sweep.dir) holds one run folder per job (0/, 1/, ...) beside
Hydra's multirun.yaml; `expand_runs` turns command-line arguments into run sources.
Every reader of run folders (analysis/, benchmarks/, tools/, tests) goes through this module.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
# Files that may hold a run: metrics.jsonl, curve CSVs, speedrun logs (modded-nanogpt's logs/<id>.txt).
# Any other file (Hydra's multirun.yaml, a plot, a checkpoint) is not a run.
RUN_FILE_SUFFIXES = (".jsonl", ".csv", ".txt", ".log")


class NoRuns(ValueError):
    """A folder given as runs holds no run folder; the message names it."""


def natural_key(path: str | Path) -> list:
    """Sort key putting sweep job 2 before job 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def run_folders(folder: str | Path) -> list[Path]:
    """The run folders at or under `folder`: itself when it holds a metrics.jsonl, else every folder below
    that does (a sweep's jobs; wandb's own folders left out), in natural order. NoRuns when there is none."""
    folder = Path(folder)
    if (folder / METRICS_FILE).is_file():
        return [folder]
    found = {p.parent for p in folder.rglob(METRICS_FILE) if "wandb" not in p.relative_to(folder).parts}
    if not found:
        raise NoRuns(f"no metrics.jsonl under {folder} (nor in it): pass run folders or sweep folders")
    return sorted(found, key=natural_key)


def expand_runs(args: list[str]) -> tuple[list[str], list[str]]:
    """Run arguments as typed (a shell glob such as outputs/multirun/X/* included) -> (run sources, skipped).

    A folder stands for its run folders (run_folders: a sweep folder for its jobs); a file whose suffix
    is not in RUN_FILE_SUFFIXES is skipped (it is returned second, for the caller to say so); anything
    else, a missing path included (an experiment name, or an error for the reader), is kept as given."""
    sources, skipped = [], []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            sources += [str(p) for p in run_folders(path)]
        elif path.is_file() and path.suffix not in RUN_FILE_SUFFIXES:
            skipped.append(arg)
        else:
            sources.append(arg)
    return sources, skipped


def skipped_note(skipped: list[str]) -> str:
    """The one line saying which arguments were not runs."""
    return (f"note: skipped {len(skipped)} file(s) that hold no run (a run is a folder, or a "
            f"{'/'.join(RUN_FILE_SUFFIXES)} file): {', '.join(skipped)}")


def metrics_path(path: str | Path) -> Path:
    """The metrics.jsonl of a run folder; any other path is taken to be the file itself."""
    p = Path(path)
    return p / METRICS_FILE if p.is_dir() else p


def parse_events(text: str) -> list[dict]:
    """The events of a metrics.jsonl's text, in order. A line that is not JSON (the torn last line a
    crash leaves) is skipped."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def read_events(path: str | Path) -> list[dict]:
    """Every event of a run (its folder or its metrics.jsonl), in file order (parse_events).
    FileNotFoundError when there is no metrics.jsonl."""
    return parse_events(metrics_path(path).read_text(encoding="utf-8"))


@dataclass
class RunLog:
    """The events of one run, with the views its readers share."""
    name: str            # the run folder's name
    events: list[dict]   # in file order

    def of(self, kind: str) -> list[dict]:
        """The events of one kind ("val", "train", "diag", "run", "summary"), in file order."""
        return [e for e in self.events if e.get("event") == kind]

    @property
    def vals(self) -> list[dict]:
        """Validations with a loss (a non-finite loss is logged as null), in file order."""
        return [e for e in self.of("val") if e.get("val_loss") is not None]

    @property
    def summary(self) -> Optional[dict]:
        """The end-of-run summary (the last one); None for a run that was interrupted or is still running."""
        return next((e for e in reversed(self.events) if e.get("event") == "summary"), None)

    @property
    def complete(self) -> bool:
        return self.summary is not None


def read_run(path: str | Path) -> RunLog:
    """The RunLog of a run folder (or of its metrics.jsonl), named after the folder."""
    p = Path(path)
    return RunLog(p.name if p.is_dir() else p.parent.name, read_events(p))


def flatten(node, prefix: str = "") -> dict:
    """Nested config dict -> {"optim.lr": 0.003, ...}."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _load_yaml(path: Path):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def config_tree(run_dir: str | Path) -> dict:
    """The run's resolved config as nested dicts ({"model": {"n_layer": 12, ...}, ...}).
    FileNotFoundError when the folder has no config.yaml."""
    return _load_yaml(Path(run_dir) / CONFIG_FILE)


def read_config(run_dir: str | Path) -> dict:
    """The run's resolved config, flattened ("optim.lr" -> 0.003); {} when the folder has no config.yaml."""
    return flatten(config_tree(run_dir)) if (Path(run_dir) / CONFIG_FILE).is_file() else {}


def read_overrides(run_dir: str | Path) -> Optional[list[str]]:
    """The run's command-line overrides as Hydra recorded them ("optim.lr=0.003", "model=small", ...);
    None when the folder has no .hydra/overrides.yaml."""
    path = Path(run_dir) / OVERRIDES_FILE
    return [str(item) for item in _load_yaml(path)] if path.is_file() else None
