"""Compare runs: one table row per run, seeds grouped into mean +- std, and val loss against train time.

    python -m analysis.summarize outputs/multirun/2026-01-02_03-04-05-123456            # a sweep
    python -m analysis.summarize RUN_DIR OTHER_RUN_DIR ... --out results/plots/lr-sweep  # any runs

A run is any folder holding a metrics.jsonl (searched recursively). Its parameters are read from its
config.yaml (the resolved config) and .hydra/overrides.yaml: the table shows only the parameters that
differ between the runs (a config group chosen on the command line, such as `optim=muon`, is shown as
one column). Runs whose parameters differ only in `seed` form one group; a group's statistics pool its
finished runs only (--include-unfinished pools the rest too), and the group is flagged, with a warning
printed under the tables, when a seed repeats, its runs end at different steps, it has one run (no
spread) or all its final losses are identical (zero spread: duplicates?). Time to target is the training
time (validation excluded) at the first validation with val loss <= the target (each run's
train.target_val_loss, or --target), the same computation as the trainer's summary.

Prints markdown tables. With --out DIR it also writes runs.csv, groups.csv, summary.md,
val_loss_vs_time.png and val_loss_vs_time.csv (the plotted series, one row per point).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from analysis.crossing import DEFAULT_TARGET, ValTracker
from analysis.pooling import RunFacts, pooling_problems, spread_problem
from analysis.runs import NoRuns, natural_key, read_config, read_overrides, read_run, run_folders
from common.atomic_io import write_text_atomic

METRICS = ("final_val_loss", "best_val_loss", "steps_to_target", "time_to_target_s", "tokens_per_s")


@dataclass
class Run:
    name: str
    path: Path
    config: dict            # flattened resolved config: "optim.lr" -> 0.003
    overrides: dict         # command-line overrides: "optim.lr" -> "0.003", "model" -> "small"
    curve: list[tuple[float, float]]  # (train_time_ms, val_loss) at each validation
    stats: dict
    complete: bool
    params: dict = field(default_factory=dict)  # the differing parameters, filled by vary()


def find_runs(dirs: list[Path]) -> list[Path]:
    """The run folders at or under `dirs` (analysis.runs.run_folders), each once, in natural order."""
    found = set()
    for d in dirs:
        if not d.exists():
            raise SystemExit(f"error: {d} does not exist")
        try:
            found.update(p.resolve() for p in run_folders(d))
        except NoRuns as e:
            raise SystemExit(f"error: {e}") from None
    return sorted(found, key=natural_key)


def load_run(path: Path, name: str, target: float | None) -> Run:
    config = read_config(path)
    overrides = {}
    for item in read_overrides(path) or []:
        key, _, value = item.lstrip("+~").partition("=")
        overrides[key] = value
    log = read_run(path)
    events, vals, summary = log.events, log.vals, log.summary
    goal = target if target is not None else config.get("train.target_val_loss", DEFAULT_TARGET)
    tracker = ValTracker(goal)
    for e in vals:
        tracker.update(e)
    timed = [e for e in events if e.get("event") in ("train", "val") and e.get("train_time_ms")]
    last = summary or (timed[-1] if timed else {})
    rate = last["tokens"] / (last["train_time_ms"] / 1000) if last.get("tokens") and last.get("train_time_ms") else None
    hit = tracker.summary()
    stats = {"final_val_loss": vals[-1]["val_loss"] if vals else None, "best_val_loss": hit["best_val_loss"],
             "target": goal, "steps_to_target": hit["target_val_loss_step"],
             "time_to_target_s": None if hit["target_val_loss_train_time_ms"] is None else hit["target_val_loss_train_time_ms"] / 1000,
             "tokens_per_s": rate, "steps": max((e.get("step", 0) for e in events if "step" in e), default=0),
             "final_step": vals[-1]["step"] if vals else None}
    return Run(name, path, config, overrides, [(e["train_time_ms"], e["val_loss"]) for e in vals], stats,
               summary is not None)


def vary(runs: list[Run]) -> list[str]:
    """Fill each run's `params` with the parameters that differ between runs; returns their names."""
    def differs(values: list) -> bool:
        return len({repr(v) for v in values}) > 1

    keys = sorted({k for r in runs for k in r.config})
    changed = [k for k in keys if differs([r.config.get(k) for r in runs])]
    # A config group picked on the command line (model=small) stands for all the keys it changes.
    groups = sorted({k for r in runs for k in r.overrides if k not in r.config and "." not in k and k != "experiment"})
    groups = [g for g in groups if differs([r.overrides.get(g) for r in runs])]
    changed = [k for k in changed if k.split(".")[0] not in groups]
    names = groups + changed
    for r in runs:
        r.params = {g: r.overrides.get(g, "(default)") for g in groups} | {k: r.config.get(k) for k in changed}
    return names


def group_runs(runs: list[Run], names: list[str]) -> list[tuple[dict, list[Run]]]:
    """Runs with the same parameters except `seed`, in first-seen order."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        key = tuple((k, repr(r.params[k])) for k in names if k != "seed")
        groups.setdefault(key, []).append(r)
    return [({k: rs[0].params[k] for k in names if k != "seed"}, rs) for rs in groups.values()]


def mean_std(values: list) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None below 2 values, n) over the finite values."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def pool(members: list[Run], include_unfinished: bool) -> tuple[list[Run], list[Run]]:
    """(runs pooled into the group's statistics, unfinished runs left out)."""
    if include_unfinished:
        return members, []
    return [r for r in members if r.complete], [r for r in members if not r.complete]


def group_warnings(pooled: list[Run], excluded: list[Run]) -> list[str]:
    """Why a group's mean +- std may mislead (see analysis/pooling.py)."""
    facts = [RunFacts(r.name, r.config, r.complete, r.stats["final_step"], r.stats["final_val_loss"]) for r in pooled]
    notes = pooling_problems(facts)
    finals = [r.stats["final_val_loss"] for r in pooled if r.stats["final_val_loss"] is not None]
    if (spread := spread_problem(finals)) is not None:
        notes.append(spread)
    if len(pooled) == 1:
        notes.append("one run: no spread, a single seed")
    if not pooled:
        notes.append("no finished run")
    if excluded:
        notes.append(f"{len(excluded)} unfinished run(s) left out: {', '.join(r.name for r in excluded)} "
                     "(--include-unfinished pools them)")
    return notes


def fmt(value, metric: str) -> str:
    if value is None:
        return "-"
    if metric in ("final_val_loss", "best_val_loss"):
        return f"{value:.4f}"
    if metric == "time_to_target_s":
        return f"{value:.2f}"
    if metric == "steps_to_target":
        return f"{value:.0f}"
    if metric == "tokens_per_s":
        return f"{value:,.0f}"
    return str(value)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def tables(runs: list[Run], names: list[str], include_unfinished: bool = False) -> tuple[list, list, list, list, list]:
    """(run header, run rows, group header, group rows, warnings), rows as display strings."""
    run_header = ["run", *names, *METRICS, "status"]
    run_rows = [[r.name, *(str(r.params[k]) for k in names), *(fmt(r.stats[m], m) for m in METRICS),
                 "done" if r.complete else "incomplete"] for r in runs]
    keys = [k for k in names if k != "seed"]
    group_header = [*keys, "runs", "seeds", *(f"{m} (mean ± std)" for m in METRICS), "reached target", "warnings"]
    group_rows, warnings = [], []
    for g, (params, members) in enumerate(group_runs(runs, names), start=1):
        pooled, excluded = pool(members, include_unfinished)
        cells = []
        for m in METRICS:
            mean, std, n = mean_std([r.stats[m] for r in pooled])
            cells.append("-" if mean is None else fmt(mean, m) if std is None else f"{fmt(mean, m)} ± {fmt(std, m)}")
        reached = sum(r.stats["steps_to_target"] is not None for r in pooled)
        seeds = ",".join(str(r.config.get("seed", "?")) for r in pooled)
        notes = group_warnings(pooled, excluded)
        label = " ".join(f"{k}={params[k]}" for k in keys) or "all runs"
        warnings += [f"group {g} ({label}): {note}" for note in notes]
        runs_cell = str(len(pooled)) + (f" (+{len(excluded)} unfinished)" if excluded else "")
        group_rows.append([*(str(params[k]) for k in keys), runs_cell, seeds, *cells,
                           f"{reached}/{len(pooled)}", f"see {len(notes)} below" if notes else ""])
    return run_header, run_rows, group_header, group_rows, warnings


def write_csvs(runs: list[Run], names: list[str], out: Path, include_unfinished: bool = False) -> None:
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "path", *names, *METRICS, "target", "steps", "complete"])
        for r in runs:
            w.writerow([r.name, r.path, *(r.params[k] for k in names), *(r.stats[m] for m in METRICS),
                        r.stats["target"], r.stats["steps"], r.complete])
    keys = [k for k in names if k != "seed"]
    with open(out / "groups.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*keys, "runs", "unfinished_left_out", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std", "n")),
                    "warnings"])
        for params, members in group_runs(runs, names):
            pooled, excluded = pool(members, include_unfinished)
            w.writerow([*(params[k] for k in keys), len(pooled), len(excluded),
                        *(x for m in METRICS for x in mean_std([r.stats[m] for r in pooled])),
                        " | ".join(group_warnings(pooled, excluded))])


def plot(runs: list[Run], names: list[str], out: Path):
    """val_loss_vs_time.png (one line per run: a color per group, a line style per seed; a dashed target line)
    and the series as CSV; returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ("-", "--", ":", "-.")
    with open(out / "val_loss_vs_time.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "label", "train_time_s", "val_loss"])
        # seed 0 solid, seed 1 dashed, ... in every group
        seeds = sorted({repr(r.config.get("seed")) for r in runs}, key=natural_key)
        for color, (_, members) in enumerate(group_runs(runs, names)):  # a color per group, a style per seed
            for r in members:
                label = " ".join(f"{k}={r.params[k]}" for k in names) or r.name
                xs, ys = [t / 1000 for t, _ in r.curve], [v for _, v in r.curve]
                style = styles[seeds.index(repr(r.config.get("seed"))) % len(styles)]
                ax.plot(xs, ys, marker=".", color=f"C{color % 10}", linestyle=style,
                        label=label, gid="run")
                w.writerows([r.name, label, x, y] for x, y in zip(xs, ys))
    targets = {r.stats["target"] for r in runs}
    low, high = ax.get_ylim()
    if len(targets) == 1 and low <= (target := targets.pop()) <= high:  # only when it does not squash the curves
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target {target}", gid="target")
    ax.set_xlabel("training time (s, validation excluded)")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title(f"val loss vs training time, {len(runs)} runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "val_loss_vs_time.png", dpi=120)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.summarize", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run folders or sweep folders (searched recursively)")
    parser.add_argument("--out", type=Path, help="write runs.csv, groups.csv, summary.md and the plot here")
    parser.add_argument("--target", type=float, help="target val loss (default: each run's train.target_val_loss)")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="pool unfinished runs (no end-of-run summary) into the group statistics too")
    args = parser.parse_args(argv)

    paths = find_runs(args.dirs)
    common = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    runs = [load_run(p, str(p.relative_to(common.parent)), args.target) for p in paths]
    names = vary(runs)
    run_header, run_rows, group_header, group_rows, warnings = tables(runs, names, args.include_unfinished)
    pooled = "finished runs" + (" and unfinished ones" if args.include_unfinished else "")
    text = (f"## Runs ({len(runs)})\n\n{markdown(run_header, run_rows)}\n\n"
            f"## Groups (seeds pooled; mean ± std over {pooled})\n\n{markdown(group_header, group_rows)}\n")
    if warnings:
        text += "\n## Warnings\n\n" + "\n".join(f"- WARNING: {w}" for w in warnings) + "\n"
    print(text)
    if warnings:
        print(f"summarize: {len(warnings)} warning(s) about pooled groups, listed under ## Warnings", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "summary.md", text)
        write_csvs(runs, names, args.out, args.include_unfinished)
        plot(runs, names, args.out)
        print(f"wrote {args.out}/summary.md, runs.csv, groups.csv, val_loss_vs_time.png, val_loss_vs_time.csv")


if __name__ == "__main__":
    main()
