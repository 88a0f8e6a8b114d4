"""Compare runs against a reference result: val loss vs training time and vs tokens, and time to target.

    python -m analysis.compare outputs/runs/A outputs/runs/B --record record05_modernarch
    python -m analysis.compare logs/1234.txt --record record12_flexattn --target 3.28 --interpolate
    python -m analysis.compare outputs/runs/T3 --record track3_muon      # track 3: #36's 10 runs
    python -m analysis.compare outputs/runs/T3 --record track3_best46    # #46's 8 runs, tail-EMA readout
    python -m analysis.compare track3_muon --record track3_best46        # #36's mean against #46

RUN may be a run folder of this harness (metrics.jsonl), a sweep folder (its job folders), a
metrics.jsonl, a speedrun log (`step:N/M val_loss:X train_time:Tms` lines), a step,val_loss,train_time_ms
CSV, or a published result (an experiment with a reference: block, or a multi-run CSV), drawn as its
runs' mean. A file that holds no run (Hydra's multirun.yaml) is skipped with a note. A run folder is
named by its command-line overrides (.hydra/overrides.yaml, run-specific keys such as the seed left out
unless they tell two runs apart), else by its folder.

A run whose data, vocabulary, model, sequence or batch size or track differ from the reference's (read
from its experiment file; analysis/comparable.py) is refused, exit 2: its ratios would mean nothing;
--force compares it anyway under warnings. So is a run off FineWeb or GPT-2's vocabulary against a
reference CSV at the default target (--target sets your own).

--metric picks the loss compared (default: the one the reference is scored on): val_loss, or
val_ema_loss, track 3's tail-EMA readout (#46 is scored on it). A run or result that logs no
val_ema_loss is compared on its val_loss (a note says so), as its readout equals val_loss.

For each run it prints the step, tokens and training time at which the val loss first reached the
target (default: the first logged validation <= target, as the speedrun counts; --interpolate:
linear interpolation between that validation and the one before), and the ratio of that time
(and token count) to the reference's, measured the same way on the reference's curve.

A reference of several runs (track 3's #36, configs/records/track3_muon.csv; #46, track3_best46.csv)
is drawn as their mean with the band of their range (min to max) and +-1 std, over the runs present
at each step (#46's seed 7 stops at 2765: its later means are over 7 runs); its crossing is the
mean's, and the report adds track 3's stopping rule (the first step every run validated where
(3.28 - mean) sqrt(n) >= 0.004, and that z), the mean of the runs' own first crossings and, for
each run, its loss at the last step both validated against the runs' mean, in std units.

The plot (two panels: vs training time, vs tokens; a third, run minus the reference mean per step,
for a multi-run reference) goes to --out, else RUN/compare_<record>.png for
a single run folder, else results/plots/compare_<record>.png. The y-axis shows the range near the
target (up to target + 1.5) but never hides a run: the top rises to every run's lowest point, and
points above the top are drawn as ^ on the edge, with a warning printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.comparable import NotComparable, differences, refuse_or_warn, target_problems, target_refusal
from analysis.crossing import DEFAULT_TARGET, Crossing, Curve, first_crossing
from analysis.curves import (RECORD_TOKENS_PER_STEP, BandPoint, CurveError, band, lacks_metric, mean_curve, read_curve,
                             record_curves, record_metric, record_path)
from analysis.pooling import run_specific
from analysis.records import METRICS
from analysis.runs import METRICS_FILE, NoRuns, expand_runs, read_config, read_overrides, skipped_note
from analysis.stats import TRACK3_MARGIN, track3_first_pass
from common.paths import REPO

ZOOM = 1.5  # the y-axis shows at most target + ZOOM, unless a run lies entirely above it
DIFF_CAP = 0.1  # the difference panel widens for a run's differences up to this (val loss), then clips


def fmt_crossing(c: Crossing | None) -> tuple[str, str, str]:
    if c is None:
        return "-", "-", "-"
    step = f"{c.step:.1f}" if c.interpolated else f"{int(c.step)}"
    time = f"{c.time_ms / 1000:.1f}" if c.time_ms is not None else "n/a"
    return step, f"{c.tokens / 1e9:.3f}B", time


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.4g}" if a is not None and b else "n/a"


def report(runs: list[Curve], record: Curve, target: float, interpolate: bool,
           spread: list[BandPoint] | None = None, references: list[Curve] | None = None) -> list[str]:
    """The report's lines; `spread` (band over the runs present) and `references` (the runs themselves) for a
    multi-run reference."""
    rec = first_crossing(record, target, interpolate)
    rule = "linear interpolation between validations" if interpolate else "first logged validation <= target"
    lines = [f"target val_loss {target} ({rule})"]
    rs, rt, rtime = fmt_crossing(rec)
    fin = record.final
    fin_time = f"{fin.time_ms / 1000:.1f} s" if fin.time_ms is not None else "no time"
    lines.append(f"record {record.name}: reached at step {rs}, {rt} tokens, {rtime} s "
                 f"(final {fin.val_loss:.4f} at step {fin.step}, {fin_time})")
    if spread:
        last = spread[-1]
        first, before = track3_first_pass([(b.step, b.mean, b.n) for b in band(references)], target)
        z_step = f"{first[0]} (z = {first[1]:.3g}" + (f"; step {before[0]}: {before[1]:.3g})" if before else ")") \
            if first else "(never)"
        lines.append(f"  {last.n} runs: final {last.mean:.5f} ± {last.std:.5f} (min {last.lo:.5f}, max {last.hi:.5f}); "
                     f"track-3 z-test (target - mean) sqrt(n) >= {TRACK3_MARGIN} first passes at step {z_step}")
        ns = sorted({b.n for b in spread})
        if len(ns) > 1:
            lines.append(f"  means over the runs present at each step: {ns[-1]} runs, down to {ns[0]} (from step "
                         f"{next(b.step for b in spread if b.n < ns[-1])})")
        own = [c.step for c in (first_crossing(r, target) for r in references) if c is not None]
        if own:
            lines.append(f"  the runs' own first validations <= {target}: mean step {sum(own) / len(own):g} "
                         f"({len(own)} of {len(references)} runs; {min(own)} to {max(own)})")
    w = max([40] + [len(r.name) for r in runs])
    lines.append(f"{'run':<{w}} {'step':>8} {'tokens':>8} {'time_s':>9} {'final':>7} {'time_ratio':>10} "
                 f"{'token_ratio':>11}")
    for run in runs:
        c = first_crossing(run, target, interpolate)
        s, t, tm = fmt_crossing(c)
        tr = ratio(c.time_ms if c else None, rec.time_ms if rec else None)
        kr = ratio(c.tokens if c else None, rec.tokens if rec else None)
        if c is None:
            tr = kr = "not reached"
        lines.append(f"{run.name:<{w}} {s:>8} {t:>8} {tm:>9} {run.final.val_loss:>7.4f} {tr:>10} {kr:>11}")
    if spread:
        by_step = {b.step: b for b in spread}
        for run in runs:
            shared = [p for p in run.points if p.step in by_step and p.step > 0]
            if shared:
                p, b = shared[-1], by_step[shared[-1].step]
                sd = f" = {(p.val_loss - b.mean) / b.std:+.1f} std" if b.std > 0 else ""
                lines.append(f"{run.name}: at step {p.step} {p.val_loss:.5f} vs the reference's "
                             f"{b.mean:.5f} ± {b.std:.5f}: {p.val_loss - b.mean:+.5f}{sd}")
    return lines


def y_range(curves: list[Curve], target: float) -> tuple[float, float]:
    """(bottom, top): down to the lowest point, up to target + ZOOM (or the highest point, if lower),
    raised so that every curve shows at least its lowest point."""
    values = [[p.val_loss for p in c.points if p.step > 0] for c in curves]
    values = [v for v in values if v]
    low = min(min(v) for v in values + [[target]])
    top = min(max(max(v) for v in values), target + ZOOM) if values else target + ZOOM
    top = max([top] + [min(v) + 0.05 for v in values])
    return low - 0.05, max(top, target + 0.05)


def _draw(ax, xs, ys, top: float, style: dict, bottom: float | None = None) -> int:
    """Plot a curve; points beyond [bottom, top] go on the edge as ^ / v. Returns how many were beyond."""
    ax.plot(xs, ys, **style)
    beyond = 0
    for edge, marker, out in ((top, "^", lambda y: y > top), (bottom, "v", lambda y: bottom is not None and y < bottom)):
        pts = [x for x, y in zip(xs, ys) if out(y)]
        if pts:
            ax.plot(pts, [edge] * len(pts), ls="none", marker=marker, ms=7, color=style["color"], clip_on=False)
            beyond += len(pts)
    return beyond


def plot(runs: list[Curve], record: Curve, target: float, out: Path, spread: list[BandPoint] | None = None,
         metric: str = "val_loss") -> list[str]:
    """Write the PNG; returns warnings about points drawn on an edge (outside the plotted range).

    With a multi-run reference a third panel shows each run minus the reference mean against steps
    (the last half of the reference's steps), over the runs' band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if spread else 2, figsize=(19 if spread else 13, 5))
    ax_t, ax_k = axes[0], axes[1]
    label = f"reference: {record.name}" + (" (band: min-max, ±1 std)" if spread else "")
    curves = [(record, dict(color="black", lw=2, label=label))]
    curves += [(r, dict(lw=1.5, marker=".", label=r.name, color=f"C{i % 10}")) for i, r in enumerate(runs)]
    bottom, top = y_range([c for c, _ in curves], target)
    warnings = []
    if spread:
        pts = [b for b in spread if b.step > 0]
        timed = all(b.time_ms is not None for b in pts)
        for ax, x in ((ax_k, [b.tokens / 1e9 for b in pts]), (ax_t, [b.time_ms / 60000 for b in pts] if timed else None)):
            if x:
                ax.fill_between(x, [b.lo for b in pts], [b.hi for b in pts], color="gray", alpha=0.25, lw=0)
                ax.fill_between(x, [b.mean - b.std for b in pts], [b.mean + b.std for b in pts], color="gray",
                                alpha=0.4, lw=0)
    for curve, style in curves:
        pts = [p for p in curve.points if p.step > 0]  # step 0 (~10.8) would squash the interesting range
        timed = [p for p in pts if p.time_ms is not None]
        beyond = _draw(ax_k, [p.tokens / 1e9 for p in pts], [p.val_loss for p in pts], top, style)
        if timed:
            _draw(ax_t, [p.time_ms / 60000 for p in timed], [p.val_loss for p in timed], top, style)
        if beyond:
            warnings.append(f"{curve.name}: {beyond} of {len(pts)} points lie above the plotted range (val_loss > "
                            f"{top:.2f}, highest {max(p.val_loss for p in pts):.3f}); drawn as ^ on the top edge")
    for ax, xlabel in ((ax_t, "training time (min; validation and compile excluded)"), (ax_k, "training tokens (B)")):
        ax.axhline(target, color="red", ls="--", lw=1, label=f"target {target}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss" + (f" ({metric})" if metric != "val_loss" else ""))
        ax.set_ylim(bottom, top)
    if spread:
        warnings += _plot_difference(axes[2], runs, spread, metric)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{metric} vs the {record.name} reference")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return warnings


def _plot_difference(ax, runs: list[Curve], spread: list[BandPoint], metric: str) -> list[str]:
    """Run minus the reference mean vs step over the reference's last half, within +-max(0.02, 6 std), widened
    up to +-DIFF_CAP to show every run's differences (a whole result's mean is often several 0.01 apart)."""
    first = spread[-1].step / 2
    pts = [b for b in spread if b.step >= first]
    steps = [b.step for b in pts]
    ns = [b.n for b in pts]  # the runs present: #46's seed 7 stops at 2765
    ax.fill_between(steps, [b.lo - b.mean for b in pts], [b.hi - b.mean for b in pts], color="gray", alpha=0.25, lw=0,
                    label=f"reference runs, min-max (n={'-'.join(map(str, sorted({min(ns), max(ns)})))})")
    ax.fill_between(steps, [-b.std for b in pts], [b.std for b in pts], color="gray", alpha=0.4, lw=0, label="±1 std")
    ax.axhline(0, color="black", lw=1.5)
    by_step = {b.step: b.mean for b in pts}
    diffs = [abs(p.val_loss - by_step[p.step]) for run in runs for p in run.points if p.step in by_step]
    half = max(0.02, 6 * max(b.std for b in pts), min(DIFF_CAP, 1.1 * max(diffs, default=0.0)))
    warnings = []
    for i, run in enumerate(runs):
        shared = [p for p in run.points if p.step in by_step]
        if not shared:
            warnings.append(f"{run.name}: no validation at the reference's steps {steps[0]}..{steps[-1]}: "
                            "not in the difference panel")
            continue
        style = dict(lw=1.5, marker=".", label=run.name, color=f"C{i % 10}")
        beyond = _draw(ax, [p.step for p in shared], [p.val_loss - by_step[p.step] for p in shared], half, style, -half)
        if beyond:
            warnings.append(f"{run.name}: {beyond} of {len(shared)} differences lie beyond ±{half:.3f}; drawn on the edge")
    ax.set_ylim(-half, half)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} - reference mean")
    return warnings


def _is_result(source: str) -> bool:
    """A published result rather than one run: an experiment name (no such path) or a CSV with a `run` column."""
    p = Path(source)
    if not p.exists():
        return True
    if p.suffix != ".csv":
        return False
    with p.open(encoding="utf-8") as f:
        return f.readline().split(",")[0].strip() == "run"


def _source(source: str) -> Path:
    """The file a run or result is read from (an experiment name: its reference curve)."""
    return Path(source) if Path(source).exists() else record_path(source)


def run_curve(source: str, tokens_per_step: int, metric: str) -> Curve:
    """One curve per RUN argument: a run's own, or a published result's mean over its runs."""
    if _is_result(source):
        return mean_curve(record_curves(source, tokens_per_step, metric), every_run=False)
    return read_curve(source, tokens_per_step, metric)


def _folder(source: str) -> Path | None:
    path = Path(source)
    return path if path.is_dir() else path.parent if path.name == METRICS_FILE else None


def _overrides_name(source: str) -> str | None:
    """A run folder's command-line overrides without run-specific keys (seed, logging, hydra.*); None without."""
    folder = _folder(source)
    items = (read_overrides(folder) if folder else None) or []
    kept = [i for i in items if not run_specific(k := i.lstrip("+~").partition("=")[0]) and not k.startswith("hydra.")]
    return " ".join(kept) or None


def name_runs(sources: list[str], curves: list[Curve]) -> None:
    """Name each curve for the report and the legend: a run folder by its overrides (_overrides_name), anything
    else (or a folder without overrides) as read; where two would share a name, each adds its seed, then its
    folder's name."""
    for source, curve in zip(sources, curves):
        curve.name = _overrides_name(source) or curve.name
    for add in (lambda s: f"seed={read_config(_folder(s)).get('seed')}" if _folder(s) else None,
                lambda s: f"({Path(s).name})"):
        names = [c.name for c in curves]
        for source, curve in zip(sources, curves):
            if names.count(curve.name) > 1 and (extra := add(source)):
                curve.name = f"{curve.name} {extra}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run or sweep folders, metrics.jsonl files, speedrun logs or CSVs")
    ap.add_argument("--record", required=True, help="reference name (configs/records/<name>.csv) or a CSV path")
    ap.add_argument("--target", type=float,
                    help=f"the loss to reach (default {DEFAULT_TARGET}: FineWeb, GPT-2 vocabulary)")
    ap.add_argument("--interpolate", action="store_true", help="interpolate the crossing between validations")
    ap.add_argument("--tokens-per-step", type=int, default=RECORD_TOKENS_PER_STEP,
                    help="for speedrun logs and CSVs, which carry no token counts")
    ap.add_argument("--metric", choices=METRICS, help="the loss compared (default: the reference's)")
    ap.add_argument("--out", type=Path, help="PNG path (default: see above)")
    ap.add_argument("--force", action="store_true", help="compare runs unlike the reference (warns; see above)")
    args = ap.parse_args(argv)
    target = DEFAULT_TARGET if args.target is None else args.target
    try:
        metric = args.metric or record_metric(args.record)
        references = record_curves(args.record, args.tokens_per_step, metric)
        args.runs, skipped = expand_runs(args.runs)
        notes = [skipped_note(skipped)] if skipped else []
        runs = [run_curve(r, args.tokens_per_step, metric) for r in args.runs]
        notes += [f"note: {r} logs no {metric}: compared on its val_loss" for r in [args.record, *args.runs]
                  if lacks_metric(_source(r), metric)]
        print("\n".join([f"metric: {metric}", *notes]))
        if not Path(args.record).exists():  # an experiment: its file says what it was run on
            refuse_or_warn(differences(args.runs, args.record), args.force, f"refusing to compare these runs with "
                           f"{args.record}, which they are not like (theirs vs its)")
        elif args.target is None:
            refuse_or_warn(target_problems(args.runs), args.force, target_refusal(target))
    except (CurveError, NoRuns, NotComparable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name_runs(args.runs, runs)
    record = mean_curve(references, every_run=False)
    spread = band(references, every_run=False) if len(references) > 1 else None
    print("\n".join(report(runs, record, target, args.interpolate, spread, references)))
    out = args.out
    name = Path(args.record).stem
    if out is None:
        single = len(args.runs) == 1 and Path(args.runs[0]).is_dir()
        out = (Path(args.runs[0]) if single else REPO / "results" / "plots") / f"compare_{name}.png"
    for warning in plot(runs, record, target, out, spread, metric):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
