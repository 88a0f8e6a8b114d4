"""Is a result significant? Track 1's t-test, track 3's z-test, and track 3's pairwise rule.

    python -m analysis.significance outputs/runs/seed*                  # track 1: mean < 3.28 at p < 0.01
    python -m analysis.significance --values 3.2771 3.2793 3.2780       # final losses typed in
    python -m analysis.significance --rule track3 outputs/multirun/X/*  # (3.28 - mean) sqrt(n) >= 0.004
    python -m analysis.significance --rule pairwise --new NEW_RUNS... --old OLD_RUNS...
    python -m analysis.significance --rule pairwise --new-summary 3.2785 10 3210 --old-summary 3.2778 16 3250
    python -m analysis.significance --rule track3 --record track3_best46        # a published result's runs
    python -m analysis.significance --rule pairwise --new outputs/multirun/X/* --old-record track3_best46

RUN may be a run folder of this harness (metrics.jsonl), a speedrun log or a CSV. Each rule prints
its inputs, the statistic and the verdict (formulas: analysis/stats.py; track 1's t-test:
one-sided one-sample, H1: mean < target).

A published result (--record, --new-record, --old-record: an experiment with a reference: block, e.g.
track3_muon (#36) or track3_best46 (#46), or a multi-run CSV) stands for its runs' losses at the step
its block claims (a CSV's last step every run validated; --step / --new-steps / --old-steps choose
another). --metric picks the loss: val_loss, or val_ema_loss (track 3's tail-EMA readout; a run or
result without it is scored on its val_loss, which its readout equals); default val_ema_loss when a
named result is scored on it (#46), else val_loss. With --rule track3 on runs or a result, the
stopping rule is reported too: the first step, among those every run validated, whose mean passes.

Runs are pooled only when that means something: finished runs (an end-of-run summary) of one
configuration, differing in their seed alone (logging and checkpoint keys aside), each seed once,
all validated last at the same step, and not all identical. Runs are judged only against what applies
to them (analysis/comparable.py): the default target 3.28 only on FineWeb with GPT-2's vocabulary
(--target sets your own), a published result only on its data, vocabulary, model, sequence and batch
sizes and track. Otherwise the script names every problem and refuses (exit 2); --force goes on anyway
under loud warnings. A sweep folder stands for its job folders; a file that holds no run (Hydra's
multirun.yaml, from outputs/multirun/X/*) is skipped with a note.
Exit status: 0 significant, 1 not significant, 2 bad input or refused.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from analysis.comparable import differences, refuse_or_warn, target_problems, target_refusal
from analysis.crossing import DEFAULT_TARGET, Curve
from analysis.curves import CurveError, band, lacks_metric, read_curve, record_curves, record_metric
from analysis.pooling import RunFacts, pooling_problems, run_facts, spread_problem
from analysis.records import METRICS, reference_of
from analysis.runs import METRICS_FILE, expand_runs, skipped_note
from analysis.stats import (TRACK3_LOSS_PER_100_STEPS, TRACK3_MARGIN, one_sided_ttest, track3_first_pass,
                            track3_pairwise, track3_ztest)


def collect(label: str, paths: list[str], values: list[float], force: bool,
            metric: str = "val_loss") -> tuple[list[float], list[RunFacts]]:
    """Final losses (`metric`) of one group: run folders / logs / CSVs, plus values typed in; checks pooling."""
    facts = []
    for p in paths:
        path = Path(p)
        if path.is_dir() and (path / METRICS_FILE).is_file():
            f = run_facts(path, metric)
            if f.final_val_loss is None:
                raise CurveError(f"{path} holds no validation points")
        else:  # a speedrun log or CSV: no config to check, assumed finished
            final = read_curve(path, metric=metric).final
            f = RunFacts(path.name, None, True, final.step, final.val_loss)
        facts.append(f)
        state = "" if f.complete else " (UNFINISHED)"
        note = f" (it logs no {metric}: its val_loss)" if lacks_metric(path, metric) else ""
        print(f"{label}{p}: final {metric} {f.final_val_loss:.5f} at step {f.final_step}{state}{note}")
    losses = [f.final_val_loss for f in facts] + list(values)
    problems = pooling_problems(facts) if len(facts) > 1 or any(not f.complete for f in facts) else []
    if (spread := spread_problem(losses)) is not None:
        problems.append(spread)
    refuse_or_warn(problems, force, "refusing to pool these runs")
    return losses, facts


def _claimed_step(record: str) -> int | None:
    """The step a named result's reference: block claims; None for a CSV path."""
    return None if Path(record).exists() else reference_of(record).steps


def record_group(label: str, record: str, metric: str, step: float | None) -> tuple[list[float], int, list[Curve]]:
    """A published result's runs: their `metric` at `step` (default: the claimed step, else the last step every
    run validated), that step, and their curves."""
    curves = record_curves(record, metric=metric)
    common = set.intersection(*({p.step for p in c.points} for c in curves))
    at = int(step) if step is not None else _claimed_step(record)
    if at is None:
        at = max(common)
    losses = [p.val_loss for c in curves for p in c.points if p.step == at]
    if len(losses) != len(curves):
        raise ValueError(f"only {len(losses)} of the {len(curves)} runs of {record} validated at step {at}: choose "
                         f"a step all validated (the last is {max(common)})")
    print(f"{label}{record}: {metric} of its {len(curves)} runs at step {at}: mean {sum(losses) / len(losses):.6f}"
          f"{f' (it logs no {metric}: its val_loss)' if lacks_metric(_curve_file(record), metric) else ''}")
    return losses, at, curves


def _curve_file(record: str) -> Path:
    return Path(record) if Path(record).exists() else reference_of(record).curve_path


def stopping_rule(curves: list[Curve], target: float) -> None:
    """Print track 3's stopping rule over the runs: the first step every run validated whose mean passes."""
    means = [(b.step, b.mean, b.n) for b in band(curves)]
    first, before = track3_first_pass(means, target)
    prior = f"; step {before[0]}: {before[1]:.3g} fails" if before else ""
    found = f"step {first[0]} (z = {first[1]:.3g}{prior})" if first else f"none of {len(means)} steps{prior}"
    print(f"stopping rule (the first step every run validated whose mean passes the z-test): {found}")


def group_steps(label: str, facts: list[RunFacts], given: float | None) -> float:
    steps = {f.final_step for f in facts}
    if given is not None:
        return given
    if len(steps) != 1 or None in steps:
        raise ValueError(f"the {label} group's runs end at steps {sorted(s for s in steps if s is not None)}: "
                         f"give --{label}-steps N")
    return float(steps.pop())


def ttest(losses: list[float], target: float, alpha: float) -> int:
    res = one_sided_ttest(losses, target, alpha)
    print(f"rule: track 1, one-sided one-sample t-test, H1: mean < {target}, significant if p < {alpha}")
    print(f"n={res.n} mean={res.mean:.5f} std={res.std:.5f} t={res.t:.3f} p={res.p:.3g}")
    if res.significant:
        print(f"verdict: SIGNIFICANT - mean {res.mean:.4f} < {res.target} at p={res.p:.3g} < {alpha}")
        return 0
    print(f"verdict: NOT SIGNIFICANT - p={res.p:.3g} >= {alpha}; more runs or a lower loss needed")
    return 1


def ztest(losses: list[float], target: float) -> int:
    res = track3_ztest(losses, target)
    print(f"rule: track 3, one-sided z-test (sigma 0.0013 assumed, p < .001): (target - mean) * sqrt(n) >= "
          f"{TRACK3_MARGIN}")
    print(f"inputs: n={res.n} mean={res.mean:.5f} target={target}")
    print(f"statistic: ({target} - {res.mean:.5f}) * sqrt({res.n}) = {res.z:.4g}")
    if res.passes:
        print(f"verdict: SIGNIFICANT - {res.z:.4g} >= {TRACK3_MARGIN}")
        return 0
    need = target - TRACK3_MARGIN / math.sqrt(res.n)
    print(f"verdict: NOT SIGNIFICANT - {res.z:.4g} < {TRACK3_MARGIN} (n={res.n} needs a mean <= {need:.5f})")
    return 1


def pairwise(new: tuple[float, int, float], old: tuple[float, int, float]) -> int:
    res = track3_pairwise(new, old)
    print(f"rule: track 3 pairwise: (final_loss_diff + steps_diff/100 * {TRACK3_LOSS_PER_100_STEPS}) / "
          f"sqrt(1/n1 + 1/n2) >= {TRACK3_MARGIN}")
    print(f"inputs: new mean {res.new_mean:.5f} n={res.new_n} at {res.new_steps:g} steps; "
          f"old mean {res.old_mean:.5f} n={res.old_n} at {res.old_steps:g} steps")
    print(f"  final_loss_diff = old - new = {res.loss_diff:+.5f}; steps_diff = old - new = {res.steps_diff:g} "
          f"-> {res.steps_diff:g}/100 * {TRACK3_LOSS_PER_100_STEPS} = {res.step_loss:+.5f}")
    print(f"statistic: ({res.loss_diff:+.5f} {res.step_loss:+.5f}) / sqrt(1/{res.new_n} + 1/{res.old_n}) = "
          f"{res.statistic:.4g}")
    if res.passes:
        print(f"verdict: SIGNIFICANT - the new result is better: {res.statistic:.4g} >= {TRACK3_MARGIN}")
        return 0
    print(f"verdict: NOT SIGNIFICANT - {res.statistic:.4g} < {TRACK3_MARGIN}")
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.significance", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run or sweep folders, metrics.jsonl files, speedrun logs or CSVs")
    ap.add_argument("--values", type=float, nargs="+", default=[], help="final val losses given directly")
    ap.add_argument("--rule", choices=("ttest", "track3", "pairwise"), default="ttest")
    ap.add_argument("--record", help="a published result's runs (experiment name or multi-run CSV) as the group")
    ap.add_argument("--step", type=float, help="--record: the step to take its runs' losses at")
    ap.add_argument("--metric", choices=METRICS, help="the loss read from runs and results (see above)")
    ap.add_argument("--new", nargs="+", default=[], help="pairwise: the new result's runs")
    ap.add_argument("--old", nargs="+", default=[], help="pairwise: the old result's runs")
    ap.add_argument("--new-summary", type=float, nargs=3, metavar=("MEAN", "N", "STEPS"))
    ap.add_argument("--old-summary", type=float, nargs=3, metavar=("MEAN", "N", "STEPS"))
    ap.add_argument("--new-record", help="pairwise: the new result as a published result's runs")
    ap.add_argument("--old-record", help="pairwise: the old result as a published result's runs (e.g. track3_best46)")
    ap.add_argument("--new-steps", type=float, help="pairwise: the new result's step count (default: its runs')")
    ap.add_argument("--old-steps", type=float, help="pairwise: the old result's step count (default: its runs')")
    ap.add_argument("--target", type=float,
                    help=f"the loss to beat (default {DEFAULT_TARGET}: FineWeb, GPT-2 vocabulary)")
    ap.add_argument("--alpha", type=float, default=0.01, help="t-test significance level")
    ap.add_argument("--force", action="store_true",
                    help="pool runs that should not be pooled, judge runs against what does not apply (warns)")
    args = ap.parse_args(argv)
    target = DEFAULT_TARGET if args.target is None else args.target
    try:
        skipped = []
        for key in ("runs", "new", "old"):
            sources, skipped_here = expand_runs(getattr(args, key))
            setattr(args, key, sources)
            skipped += skipped_here
        if skipped:
            print(skipped_note(skipped))
        named = [r for r in (args.record, args.new_record, args.old_record) if r]
        # the readout outranks val_loss: a result without it is scored on val_loss, which its readout equals
        metric = args.metric or max((record_metric(r) for r in named), key=METRICS.index, default="val_loss")
        if metric != "val_loss":
            print(f"metric: {metric}")
        if args.rule != "pairwise":
            if args.new or args.old or args.new_summary or args.old_summary or args.new_record or args.old_record:
                raise ValueError("--new/--old, --*-summary and --*-record belong to --rule pairwise")
            if args.record:
                if args.runs or args.values:
                    raise ValueError("--record is the group: give no runs or --values beside it")
                losses, _, curves = record_group("", args.record, metric, args.step)
            else:
                if args.step is not None:
                    raise ValueError("--step belongs to --record (a run's loss is its last validation's)")
                losses, _ = collect("", args.runs, args.values, args.force, metric)
                curves = None
                if args.target is None:  # your own --target is yours to choose
                    refuse_or_warn(target_problems(args.runs), args.force, target_refusal(target))
            if args.rule == "ttest":
                return ttest(losses, target, args.alpha)
            curves = curves if curves is not None else [read_curve(r, metric=metric) for r in args.runs]
            if curves:
                stopping_rule(curves, target)
            return ztest(losses, target)
        if args.runs or args.values or args.record:
            raise ValueError("--rule pairwise takes --new ... --old ... (or --new-summary / --old-summary, "
                             "--new-record / --old-record), not positional runs, --values or --record")
        sides = {}
        for label, paths, summary, record, steps in (
                ("new", args.new, args.new_summary, args.new_record, args.new_steps),
                ("old", args.old, args.old_summary, args.old_record, args.old_steps)):
            if sum(map(bool, (paths, summary, record))) != 1:
                raise ValueError(f"give the {label} result as one of --{label} RUNS..., --{label}-summary MEAN N "
                                 f"STEPS or --{label}-record NAME")
            if summary:
                sides[label] = (summary[0], summary[1], summary[2])
            elif record:
                losses, at, _ = record_group(f"{label}: ", record, metric, steps)
                sides[label] = (sum(losses) / len(losses), len(losses), float(at))
            else:
                losses, facts = collect(f"{label}: ", paths, [], args.force, metric)
                sides[label] = (sum(losses) / len(losses), len(losses), group_steps(label, facts, steps))
        for runs, record in ((args.new, args.old_record), (args.old, args.new_record)):
            if runs and record and not Path(record).exists():  # runs against a published result
                refuse_or_warn(differences(runs, record), args.force, f"refusing to judge these runs against "
                               f"{record}, which they are not like (theirs vs its)")
        return pairwise(sides["new"], sides["old"])
    except (CurveError, ValueError) as e:  # NotComparable and NoRuns included
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
