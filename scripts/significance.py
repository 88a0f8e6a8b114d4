"""Is a record attempt significant? The speedrun's rule: over several runs, the mean final val loss
must be below the target at p < 0.01 (one-sided one-sample t-test on the final val losses).

    python scripts/significance.py outputs/runs/seed*            # run folders, logs or CSVs
    python scripts/significance.py --values 3.2771 3.2793 3.2780  # final losses typed in

Prints n, mean, sample std, t, the one-sided p-value (H1: mean < target) and the verdict.
Exit status: 0 significant, 1 not significant, 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.curves import DEFAULT_TARGET, CurveError, one_sided_ttest, read_curve  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run folders, metrics.jsonl files, speedrun logs or CSVs")
    ap.add_argument("--values", type=float, nargs="+", default=[], help="final val losses given directly")
    ap.add_argument("--target", type=float, default=DEFAULT_TARGET)
    ap.add_argument("--alpha", type=float, default=0.01)
    args = ap.parse_args(argv)
    losses = list(args.values)
    try:
        for r in args.runs:
            final = read_curve(r).final
            print(f"{r}: final val_loss {final.val_loss:.4f} at step {final.step}")
            losses.append(final.val_loss)
        res = one_sided_ttest(losses, args.target, args.alpha)
    except (CurveError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"n={res.n} mean={res.mean:.5f} std={res.std:.5f} t={res.t:.3f} p={res.p:.3g} "
          f"(one-sided one-sample t-test, H1: mean < {res.target})")
    if res.significant:
        print(f"verdict: SIGNIFICANT - mean {res.mean:.4f} < {res.target} at p={res.p:.3g} < {res.alpha}")
        return 0
    print(f"verdict: NOT SIGNIFICANT - p={res.p:.3g} >= {res.alpha}; more runs or a lower loss needed")
    return 1


if __name__ == "__main__":
    sys.exit(main())
