"""Significance over runs: track 3's rules, and which runs may be pooled into one statistic at all.

Track 3 (the optimization benchmark; rules in modded-nanogpt's records/track_3_optimization/README.md):
- one group, a one-sided z-test with sigma = 0.0013 assumed (p < .001 is 3.09 sigma = 0.004):
      z = (3.28 - mean) * sqrt(n) >= 0.004
- a new result against an old one, steps converted to loss at 0.0045 per 100 steps (measured on
  its result #12: 200 fewer steps cost 0.0091):
      (final_loss_diff + steps_diff / 100 * 0.0045) / sqrt(1/n1 + 1/n2) >= 0.004
  with final_loss_diff = old mean - new mean and steps_diff = old steps - new steps (both positive
  when the new result is better).
Track 1's rule (a one-sided t-test, p < 0.01) is `analysis.curves.one_sided_ttest`.

Pooling: a mean over runs is only meaningful over finished runs of one configuration that differ
in their seed alone; `pooling_problems` lists every way a set of runs breaks that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TRACK3_TARGET = 3.28
TRACK3_MARGIN = 0.004          # 3.09 sigma at sigma = 0.0013 (one-sided p < .001)
TRACK3_LOSS_PER_100_STEPS = 0.0045

# Config keys that may differ between runs of one configuration (they change where and how a run
# is logged or resumed, not what it computes).
RUN_SPECIFIC = ("seed", "resume", "resume_force", "data.prefetch", "train.log_every")
RUN_SPECIFIC_PREFIXES = ("logger.", "checkpoint.")


@dataclass
class ZTest:
    n: int
    mean: float
    z: float          # (target - mean) * sqrt(n), in val-loss units
    target: float
    margin: float

    @property
    def passes(self) -> bool:
        return self.z >= self.margin


def track3_ztest(losses: list[float], target: float = TRACK3_TARGET, margin: float = TRACK3_MARGIN) -> ZTest:
    """Track 3's one-group rule on final val losses (n >= 1: sigma is assumed, not estimated)."""
    if not losses:
        raise ValueError("the z-test needs at least one final loss")
    if any(not math.isfinite(x) for x in losses):
        raise ValueError(f"non-finite final loss among {losses}")
    n = len(losses)
    mean = sum(losses) / n
    return ZTest(n, mean, (target - mean) * math.sqrt(n), target, margin)


@dataclass
class Pairwise:
    new_mean: float
    new_n: int
    new_steps: float
    old_mean: float
    old_n: int
    old_steps: float
    loss_per_100_steps: float
    margin: float

    @property
    def loss_diff(self) -> float:
        return self.old_mean - self.new_mean

    @property
    def steps_diff(self) -> float:
        return self.old_steps - self.new_steps

    @property
    def step_loss(self) -> float:
        """The steps saved, in val-loss units."""
        return self.steps_diff / 100 * self.loss_per_100_steps

    @property
    def statistic(self) -> float:
        return (self.loss_diff + self.step_loss) / math.sqrt(1 / self.new_n + 1 / self.old_n)

    @property
    def passes(self) -> bool:
        return self.statistic >= self.margin


def track3_pairwise(new: tuple[float, int, float], old: tuple[float, int, float],
                    loss_per_100_steps: float = TRACK3_LOSS_PER_100_STEPS, margin: float = TRACK3_MARGIN) -> Pairwise:
    """Track 3's rule for a new result against an old one; each given as (mean final loss, n, steps)."""
    for label, (mean, n, steps) in (("new", new), ("old", old)):
        if n < 1 or n != int(n):
            raise ValueError(f"the {label} result's run count must be a whole number >= 1 (got {n})")
        if not math.isfinite(mean) or steps < 0:
            raise ValueError(f"the {label} result needs a finite mean and steps >= 0 (got {mean}, {steps})")
    return Pairwise(new[0], int(new[1]), new[2], old[0], int(old[1]), old[2], loss_per_100_steps, margin)


@dataclass
class RunFacts:
    """What pooling needs to know about one run folder."""
    name: str
    config: Optional[dict]       # flattened resolved config ("optim.lr" -> 0.003); {} when a run folder has
                                 # none; None for sources that never have one (speedrun logs, CSVs)
    complete: bool               # it wrote its end-of-run summary
    final_step: Optional[int]    # step of its last validation
    final_val_loss: Optional[float]


def _run_specific(key: str) -> bool:
    return key in RUN_SPECIFIC or key.startswith(RUN_SPECIFIC_PREFIXES)


def pooling_problems(runs: list[RunFacts]) -> list[str]:
    """Every reason the runs' final losses should not be pooled into one mean; [] when they may be."""
    problems = []
    unfinished = [r.name for r in runs if not r.complete]
    if unfinished:
        problems.append(f"{len(unfinished)} unfinished run(s) (no end-of-run summary: interrupted or still "
                        f"running): {', '.join(unfinished)}")
    missing = [r.name for r in runs if r.config == {}]
    if missing:
        problems.append(f"no config.yaml, so their configuration cannot be checked: {', '.join(missing)}")
    configs = [r for r in runs if r.config]
    keys = sorted({k for r in configs for k in r.config if not _run_specific(k)})
    for key in keys:
        values = {repr(r.config.get(key)) for r in configs}
        if len(values) > 1:
            problems.append(f"runs differ in {key} ({', '.join(sorted(values))}): different configurations")
    seeds = [r.config.get("seed") for r in configs]
    repeated = sorted({repr(s) for s in seeds if seeds.count(s) > 1})
    if repeated:
        problems.append(f"seed {', '.join(repeated)} appears more than once: the same run counted twice?")
    steps = {r.final_step for r in runs}
    if len(steps) > 1:
        problems.append(f"final validations at different steps {sorted(s for s in steps if s is not None)}: "
                        "compare losses at one step (a run stopped on its val loss is early stopping)")
    return problems


def flatten(node, prefix: str = "") -> dict:
    """Nested config dict -> {"optim.lr": 0.003, ...}."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def run_facts(path: str | Path) -> RunFacts:
    """RunFacts of a run folder of this harness (its config.yaml and metrics.jsonl)."""
    from omegaconf import OmegaConf

    from analysis.curves import read_metrics

    path = Path(path)
    config = {}
    if (path / "config.yaml").is_file():
        config = flatten(OmegaConf.to_container(OmegaConf.load(path / "config.yaml")))
    events = read_metrics(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    vals = [e for e in events if e.get("event") == "val" and e.get("val_loss") is not None]
    complete = any(e.get("event") == "summary" for e in events)
    return RunFacts(path.name, config, complete, vals[-1]["step"] if vals else None,
                    vals[-1]["val_loss"] if vals else None)


def spread_problem(losses: list[float]) -> Optional[str]:
    """A warning when n >= 2 final losses are all identical (a t statistic is then meaningless)."""
    if len(losses) >= 2 and max(losses) == min(losses):
        return (f"all {len(losses)} final losses are identical ({losses[0]}): zero spread, so a t statistic is "
                "meaningless; were these really different seeds?")
    return None
