"""Compare runs against a speedrun record: val loss vs training time and vs tokens, and time to target.

    python scripts/compare.py outputs/runs/A outputs/runs/B --record record05_modernarch
    python scripts/compare.py logs/1234.txt --record record12_flexattn --target 3.28 --interpolate

RUN may be a run folder of this harness (metrics.jsonl), a metrics.jsonl, a speedrun log
(`step:N/M val_loss:X train_time:Tms` lines) or a step,val_loss,train_time_ms CSV.

For each run it prints the step, tokens and training time at which the val loss first reached the
target (default: the first logged validation <= target, as the speedrun counts; --interpolate:
linear interpolation between that validation and the one before), and the ratio of that time
(and token count) to the record's, measured the same way on the record's curve. The plot
(two panels: vs training time, vs tokens) goes to --out, else RUN/compare_<record>.png for a
single run folder, else results/plots/compare_<record>.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.curves import (DEFAULT_TARGET, RECORD_TOKENS_PER_STEP, Crossing, Curve, CurveError,  # noqa: E402
                            first_crossing, read_curve, record_curve)

REPO = Path(__file__).resolve().parents[1]


def fmt_crossing(c: Crossing | None) -> tuple[str, str, str]:
    if c is None:
        return "-", "-", "-"
    step = f"{c.step:.1f}" if c.interpolated else f"{int(c.step)}"
    time = f"{c.time_ms / 1000:.1f}" if c.time_ms is not None else "n/a"
    return step, f"{c.tokens / 1e9:.3f}B", time


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.4g}" if a is not None and b else "n/a"


def report(runs: list[Curve], record: Curve, target: float, interpolate: bool) -> list[str]:
    rec = first_crossing(record, target, interpolate)
    rule = "linear interpolation between validations" if interpolate else "first logged validation <= target"
    lines = [f"target val_loss {target} ({rule})"]
    rs, rt, rtime = fmt_crossing(rec)
    fin = record.final
    fin_time = f"{fin.time_ms / 1000:.1f} s" if fin.time_ms is not None else "no time"
    lines.append(f"record {record.name}: reached at step {rs}, {rt} tokens, {rtime} s "
                 f"(final {fin.val_loss:.4f} at step {fin.step}, {fin_time})")
    lines.append(f"{'run':<40} {'step':>8} {'tokens':>8} {'time_s':>9} {'final':>7} {'time_ratio':>10} {'token_ratio':>11}")
    for run in runs:
        c = first_crossing(run, target, interpolate)
        s, t, tm = fmt_crossing(c)
        tr = ratio(c.time_ms if c else None, rec.time_ms if rec else None)
        kr = ratio(c.tokens if c else None, rec.tokens if rec else None)
        if c is None:
            tr = kr = "not reached"
        lines.append(f"{run.name[-40:]:<40} {s:>8} {t:>8} {tm:>9} {run.final.val_loss:>7.4f} {tr:>10} {kr:>11}")
    return lines


def plot(runs: list[Curve], record: Curve, target: float, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_k) = plt.subplots(1, 2, figsize=(13, 5))
    curves = [(record, dict(color="black", lw=2, label=f"record: {record.name}"))]
    curves += [(r, dict(lw=1.5, marker=".", label=r.name)) for r in runs]
    lows = []
    for curve, style in curves:
        pts = [p for p in curve.points if p.step > 0]  # step 0 (~10.8) would squash the interesting range
        lows += [p.val_loss for p in pts]
        ax_k.plot([p.tokens / 1e9 for p in pts], [p.val_loss for p in pts], **style)
        timed = [p for p in pts if p.time_ms is not None]
        if timed:
            ax_t.plot([p.time_ms / 60000 for p in timed], [p.val_loss for p in timed], **style)
    for ax, xlabel in ((ax_t, "training time (min; validation and compile excluded)"), (ax_k, "training tokens (B)")):
        ax.axhline(target, color="red", ls="--", lw=1, label=f"target {target}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss")
        ax.set_ylim(min(lows + [target]) - 0.05, min(max(lows), target + 1.5))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"val loss vs the {record.name} record")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders, metrics.jsonl files, speedrun logs or CSVs")
    ap.add_argument("--record", required=True, help="record name (results/records/<name>.csv) or a CSV path")
    ap.add_argument("--target", type=float, default=DEFAULT_TARGET)
    ap.add_argument("--interpolate", action="store_true", help="interpolate the crossing between validations")
    ap.add_argument("--tokens-per-step", type=int, default=RECORD_TOKENS_PER_STEP,
                    help="for speedrun logs and CSVs, which carry no token counts")
    ap.add_argument("--out", type=Path, help="PNG path (default: see above)")
    args = ap.parse_args(argv)
    try:
        record = record_curve(args.record)
        runs = [read_curve(r, args.tokens_per_step) for r in args.runs]
    except CurveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(report(runs, record, args.target, args.interpolate)))
    out = args.out
    if out is None:
        single = len(args.runs) == 1 and Path(args.runs[0]).is_dir()
        out = (Path(args.runs[0]) if single else REPO / "results" / "plots") / f"compare_{record.name}.png"
    plot(runs, record, args.target, out)
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
