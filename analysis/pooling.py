"""Which runs may be pooled into one statistic at all.

A mean over runs is only meaningful over finished runs of one configuration that differ in their
seed alone; `pooling_problems` lists every way a set of runs breaks that. The tests themselves
(track 1's t-test, track 3's z-test and pairwise rule) are in analysis.stats.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from analysis.runs import METRICS_FILE, RunLog, read_config, read_run

# Config keys that may differ between runs of one configuration (they change where and how a run
# is logged or resumed, not what it computes).
RUN_SPECIFIC = ("seed", "resume", "resume_force", "data.prefetch", "train.log_every")
RUN_SPECIFIC_PREFIXES = ("logger.", "checkpoint.")


@dataclass
class RunFacts:
    """What pooling needs to know about one run folder."""
    name: str
    config: Optional[dict]       # flattened resolved config ("optim.lr" -> 0.003); {} when a run folder has
                                 # none; None for sources that never have one (speedrun logs, CSVs)
    complete: bool               # it wrote its end-of-run summary
    final_step: Optional[int]    # step of its last validation
    final_val_loss: Optional[float]


def run_specific(key: str) -> bool:
    """A config key that may differ between runs of one configuration (RUN_SPECIFIC)."""
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
    keys = sorted({k for r in configs for k in r.config if not run_specific(k)})
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


def run_facts(path: str | Path, metric: str = "val_loss") -> RunFacts:
    """RunFacts of a run folder of this harness (its config.yaml and metrics.jsonl); the final loss is the
    last validation's `metric` (val_ema_loss: the tail-EMA readout), its val_loss where it has none."""
    path = Path(path)
    log = read_run(path) if (path / METRICS_FILE).is_file() else RunLog(path.name, [])
    vals = log.vals
    last = vals[-1] if vals else {}
    final = last.get(metric) if last.get(metric) is not None else last.get("val_loss")
    return RunFacts(path.name, read_config(path), log.complete, last.get("step"), final)


def spread_problem(losses: list[float]) -> Optional[str]:
    """A warning when n >= 2 final losses are all identical (a t statistic is then meaningless)."""
    if len(losses) >= 2 and max(losses) == min(losses):
        return (f"all {len(losses)} final losses are identical ({losses[0]}): zero spread, so a t statistic is "
                "meaningless; were these really different seeds?")
    return None
