"""The published results our experiments reproduce: each one's `reference:` block, and the one reader of it.

An experiment file (configs/experiment/<name>.yaml) that reproduces a speedrun record or a track-3
result says so in a `reference:` block (schema: `ReferenceInfo`; it is also `Config.reference`, so a
run's config.yaml carries it). That block is the only place a record is declared: tests, curves and
tools enumerate the records with `experiments_with_reference()` and read one with `reference_of(name)`.
Experiments without the block (the proxies, smoke, cpu_fineweb) reproduce nothing.

Read straight from the YAML files with OmegaConf (no Hydra composition): an experiment that inherits
another one's file (`defaults: [track3_muon]`) does not inherit its block here, and so states
`reference: null` to say the same in the composed config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.paths import CONFIGS, RECORD_CURVES

EXPERIMENTS_DIR = CONFIGS / "experiment"
TRACKS = (1, 3)  # 1: the speedrun (wall-clock time to 3.28 on 8x H100); 3: the optimization benchmark (steps)
# The loss a result is scored on: a run's "val" events (metrics.jsonl) and a curve CSV's columns carry both.
# val_ema_loss is track 3's tail-EMA readout (result #46, track3_best46_cwd_rowfloor_tailema.py): the loss of
# the blend (1 - lambda) w + lambda EMA(w); before the EMA starts it equals val_loss.
METRICS = ("val_loss", "val_ema_loss")


class ReferenceBlockError(ValueError):
    """An experiment's `reference:` block is malformed; the message names the file and the key."""


@dataclass
class ReferenceInfo:
    """What an experiment reproduces: where the published result lives and what it was.

    Losses are FineWeb validation losses (nats/token) on the first 10,485,760 tokens of the val shard;
    steps are optimizer steps of 524,288 tokens; times are training milliseconds on 8x H100
    (validation and the first steps' compilation excluded, as the public logs count them)."""

    track: int                   # 1 or 3 (TRACKS)
    curve: str                   # the published val-loss curve(s): a CSV under configs/records/
    val_loss: float              # the published val loss: the mean over `runs` of `metric` at step `steps`
    steps: int                   # optimizer steps of the published run(s): the step the result is claimed at
    script: Optional[str] = None  # its script under ../shared/reference/modded-nanogpt/; null: not there
    train_time_ms: Optional[float] = None  # published training time (mean over `runs`); null: the log has none
    runs: int = 1                # runs behind val_loss and train_time_ms (track 3's #36: 10)
    metric: str = "val_loss"     # the loss the result is scored on (METRICS); track 3's #46: val_ema_loss

    def check(self) -> None:
        if self.track not in TRACKS:
            raise ValueError(f"reference.track must be one of {TRACKS} (got {self.track})")
        if not self.curve.endswith(".csv") or "/" in self.curve:
            raise ValueError(f"reference.curve must be a CSV file name under configs/records/ (got {self.curve!r})")
        if self.script is not None and (not self.script.endswith(".py") or "/" in self.script):
            raise ValueError("reference.script must be a file name under ../shared/reference/modded-nanogpt/ "
                             f"or null (got {self.script!r})")
        if self.metric not in METRICS:
            raise ValueError(f"reference.metric must be one of {METRICS} (got {self.metric!r})")
        for key in ("val_loss", "steps", "runs"):
            if not getattr(self, key) > 0:
                raise ValueError(f"reference.{key} must be > 0 (got {getattr(self, key)})")
        if self.train_time_ms is not None and not self.train_time_ms > 0:
            raise ValueError(f"reference.train_time_ms must be > 0 or null (got {self.train_time_ms})")

    @property
    def curve_path(self) -> Path:
        return RECORD_CURVES / self.curve


def experiment_file(experiment: str) -> Path:
    """configs/experiment/<experiment>.yaml; ReferenceBlockError naming the known ones when there is none."""
    path = EXPERIMENTS_DIR / f"{experiment}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
        raise ReferenceBlockError(f"no experiment file {path}; known experiments: {known}")
    return path


def experiment_node(experiment: str):
    """configs/experiment/<experiment>.yaml merged over the experiments it names in its defaults list (a
    plain entry such as `- track3_muon`, merged first, as Hydra composes them); the other groups it
    chooses (`override /optim: ...`) are not followed. An OmegaConf DictConfig."""
    own = OmegaConf.load(experiment_file(experiment))
    parents = [entry for entry in own.get("defaults") or [] if isinstance(entry, str) and entry != "_self_"]
    merged = OmegaConf.merge(*(experiment_node(parent) for parent in parents), own) if parents else own
    return merged


def reference_of(experiment: str) -> Optional[ReferenceInfo]:
    """The `reference:` block of configs/experiment/<experiment>.yaml (inherited blocks merged as Hydra
    does: an experiment built on another states `reference: null` when it reproduces nothing), validated;
    None without one."""
    path = experiment_file(experiment)
    try:
        node = experiment_node(experiment).get("reference")
        if node is None:
            return None
        info = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ReferenceInfo), node))
        info.check()
    except (OmegaConfBaseException, ValueError) as e:
        key = getattr(e, "full_key", None)  # OmegaConf's errors name the key on a later line
        where = f"reference.{key}: " if key else ""
        raise ReferenceBlockError(f"{path}: {where}{str(e).splitlines()[0]} (see analysis/records.py's "
                                  "ReferenceInfo)") from None
    return info


def experiments_with_reference(track: Optional[int] = None) -> list[str]:
    """Names of the experiments that declare a reference (of `track`, if given), sorted."""
    names = []
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        info = reference_of(path.stem)
        if info is not None and (track is None or info.track == track):
            names.append(path.stem)
    return names
