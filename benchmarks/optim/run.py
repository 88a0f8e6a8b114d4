"""Optimizer benchmark: named arms (override sets, benchmarks/optim/arms.py) over one base experiment,
the same lr sweep for every arm, then seeds at each arm's best lr; a report with val loss at fixed
steps, steps to the reference's (tuned Muon's) final loss as a ratio, seed spreads, one-sided
Welch p-values and a PNG (benchmarks/optim/report.py).

Every run is `train.py <base> <arm overrides> optim.lr=LR seed=S` in its own folder under --out-runs.
Phase 1: each arm's lr grid (its base lr x --lr-mults) at seed 0, full length; the lowest final val
loss picks the arm's lr; phase 2: seeds 1..N-1 at that lr. Resumable: a folder whose metrics.jsonl
holds a summary is reused (a folder made by other overrides is refused, naming it); a run stopped by
SIGTERM resumes from its checkpoint; one that died without a checkpoint is moved aside and rerun.

    python -m benchmarks.optim.run --experiment cpu_fineweb --data ../shared/corpora/fineweb-sample/tokens \\
        --set model.tie_embeddings=false --center muon=0.01 --center 'dual*=0.03' --steps 400 --dry-run

--dry-run prints the resolved arms and the run plan and launches nothing; --report-only writes the
report from the finished runs. The default report is results/benchmarks/optim_<experiment>.md (+ .png).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from analysis.crossing import Curve, Point
from analysis.runs import METRICS_FILE, read_overrides, read_run
from benchmarks.optim.arms import ARMS, Arm, parse_arm_specs, resolve_arms
from benchmarks.optim.report import write_report
from common.paths import REPO as ROOT

RECORD = "bench.json"  # in each run folder: the overrides it was launched with


def run_name(arm: str, lr: float, seed: int) -> str:
    return f"{arm}_lr{lr:g}_s{seed}"


def lr_grid(arm: Arm, centers: list[str], mults: list[float], grids: list[str] = ()) -> list[float]:
    """The arm's sweep: its center (the last matching --center GLOB=LR, else its composed optim.lr) x mults,
    or an explicit grid (the last matching --lrs GLOB=LR,LR,...)."""
    center, grid = float(arm.config["optim"]["lr"]), None
    for flag, specs in (("--center", centers), ("--lrs", grids)):
        for spec in specs:
            pattern, sep, value = spec.partition("=")
            try:
                values = [float(v) for v in value.split(",")] if sep else []
            except ValueError:
                values = []
            if not values or (flag == "--center" and len(values) != 1):
                raise SystemExit(f"{flag} {spec!r}: expected GLOB=LR" + (",LR,..." if flag == "--lrs" else "") +
                                 ", e.g. muon=0.01 or 'dual*=0.03'")
            if fnmatch.fnmatchcase(arm.name, pattern):
                center, grid = (values[0], grid) if flag == "--center" else (center, values)
    return grid if grid is not None else [float(f"{center * m:.6g}") for m in mults]


def train_overrides(base: list[str], arm: Arm, lr: float, seed: int) -> list[str]:
    return [*base, *arm.overrides, f"optim.lr={lr}", f"seed={seed}"]


def recorded_overrides(run_dir: Path) -> list[str] | None:
    """What an existing run folder was launched with: our record, else Hydra's overrides.yaml."""
    if (run_dir / RECORD).exists():
        return json.loads((run_dir / RECORD).read_text())["overrides"]
    hydra = read_overrides(run_dir)
    return None if hydra is None else [o for o in hydra if not o.startswith("hydra.")]


def load_run(run_dir: Path) -> dict | None:
    """A finished run (its metrics.jsonl has the end-of-run summary), else None: {"curve": its validations
    (one per step, tokens left 0), "final": the summary's final val loss, "ms_per_step": mean training ms
    per optimizer step}."""
    if not (Path(run_dir) / METRICS_FILE).exists():
        return None
    log = read_run(run_dir)
    summary = log.summary
    if summary is None:
        return None
    vals = sorted({e["step"]: e for e in log.of("val")}.values(), key=lambda e: e["step"])
    # A run with train.tail_ema is scored on its readout (track 3's #46), as the trainer scores it: the
    # curve reads val_ema_loss where logged (it equals val_loss before the EMA starts).
    ema = summary.get("scored_metric") == "val_ema_loss"
    key = "val_ema_loss" if ema else "val_loss"
    return {"curve": Curve(log.name, [Point(e["step"], 0, e["train_time_ms"], e.get(key, e["val_loss"])) for e in vals]),
            "final": summary["final_val_ema_loss" if ema else "final_val_loss"], "metric": key,
            "final_raw": summary.get("final_val_loss"),
            "ms_per_step": summary["train_time_ms"] / max(1, summary["steps"])}


def check_folders(out_runs: Path, plan: dict[str, list[str]]) -> None:
    """Refuse to reuse a folder that holds a run of other overrides (before anything is launched)."""
    for name, overrides in plan.items():
        run_dir = out_runs / name
        if not run_dir.exists():
            continue
        found = recorded_overrides(run_dir)
        if found is not None and found != overrides:
            raise SystemExit(f"{run_dir} holds a run of other overrides ({' '.join(found)}), not "
                             f"({' '.join(overrides)}): use another --out-runs or remove that folder")


def run_process(cmd: list[str], run_dir: Path, env: dict) -> int:
    """One train.py process, output appended to the run folder's stdout.log (tests replace this)."""
    with open(run_dir / "stdout.log", "a") as log:
        return subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def launch(args, overrides: list[str], name: str, attempts: int = 6) -> dict | None:
    """Run train.py with `overrides` in out_runs/name unless finished; returns its parsed metrics.

    Stopped by SIGTERM: it wrote a checkpoint, so relaunching in the same folder resumes it (resume=auto).
    Died without one: the folder is moved aside and the run restarts (metrics.jsonl is appended to,
    so two attempts must not share a folder)."""
    run_dir = Path(args.out_runs) / name
    log_file = run_dir / "stdout.log"
    # another driver may be running this very run (its log still grows): wait for it
    while load_run(run_dir) is None and log_file.exists() and time.time() - log_file.stat().st_mtime < 300:
        time.sleep(30)
    cached = load_run(run_dir)
    if cached is not None:
        print(f"[cached] {name}: final val {cached['final']:.4f}", flush=True)
        return cached
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    # one thread per run: on shared cores, oversubscribed OpenMP threads spin and slow every run
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    t0, result, rc = time.time(), None, None
    for attempt in range(attempts):
        resumable = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
        if run_dir.exists() and not resumable:
            stale = run_dir.with_name(f"{run_dir.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(stale)
            print(f"[moved aside] unfinished {name} -> {stale.name}", flush=True)
        elif resumable:
            print(f"[resume] {name} (attempt {attempt + 1})", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RECORD).write_text(json.dumps({"overrides": overrides}, indent=1))
        rc = run_process(cmd, run_dir, env)
        result = load_run(run_dir)
        if result is not None or rc not in (0, -15, -9, 143, 137):  # finished, or a real error: stop
            break
    status = f"final val {result['final']:.4f}" if result else f"FAILED rc={rc} (see {run_dir}/stdout.log)"
    print(f"[done {time.time() - t0:.0f}s] {name}: {status}", flush=True)
    return result


def chosen_lr(results: dict, arm: str, grid: list[float]) -> float | None:
    finals = {lr: results[(arm, lr, 0)]["final"] for lr in grid if (arm, lr, 0) in results}
    return min(finals, key=finals.get) if finals else None


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.optim.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="cpu_fineweb", help="base experiment of every run")
    ap.add_argument("--data", default=None, help="data.dir for every run (token shards)")
    ap.add_argument("--set", nargs="*", default=[], dest="common", help="more overrides for every run")
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps (default: the experiment's)")
    ap.add_argument("--val-every", type=int, default=None, help="train.val_every (default: the experiment's)")
    ap.add_argument("--arms", "--optimizers", nargs="+", default=None, help=f"arms to run (default all: {' '.join(ARMS)})")
    ap.add_argument("--arm", action="append", default=[], help="define or redefine an arm: 'NAME=override;override'")
    ap.add_argument("--extra", action="append", default=[], help="'GLOB:override' added to the matching arms")
    ap.add_argument("--reference", default="muon", help="the arm whose final loss is the target")
    ap.add_argument("--also-vs", nargs="*", default=[], help="more arms to compare every arm against (steps ratio, p)")
    ap.add_argument("--ablation", action="append", default=[],
                    help="'CHILD=PARENT': report CHILD against the arm it modifies (repeatable)")
    ap.add_argument("--goal-ratio", type=float, default=0.90,
                    help="the goal: a dual-family arm at <= this x the reference's steps (issue 27: 0.83)")
    ap.add_argument("--center", action="append", default=[], help="'GLOB=LR': sweep center (default: the arm's optim.lr)")
    ap.add_argument("--lr-mults", default="0.5,1,2", help="the sweep: center x each (the same for every arm)")
    ap.add_argument("--lrs", nargs="*", default=[], help="'GLOB=LR,LR,...': an explicit grid instead (matching arms)")
    ap.add_argument("--val-tokens", type=int, default=None, help="train.val_tokens (default: the experiment's)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds at each arm's chosen lr (seed 0 is the sweep's run)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out-runs", default=None, help="run folders (default outputs/bench_optim/<experiment>)")
    ap.add_argument("--report", default=None, help="default results/benchmarks/optim_<experiment>_<device>.md")
    ap.add_argument("--title", default=None)
    ap.add_argument("--notes", default=None, help="markdown file appended to the report")
    ap.add_argument("--dry-run", action="store_true", help="resolve the arms, print the plan, launch nothing")
    ap.add_argument("--report-only", action="store_true", help="launch nothing: report from the finished runs")
    args = ap.parse_args(argv)
    args.out_runs = args.out_runs or str(ROOT / "outputs" / "bench_optim" / args.experiment)
    args.report = args.report or str(ROOT / "results" / "benchmarks" / f"optim_{args.experiment}_{args.device}.md")
    try:
        args.mults = [float(m) for m in args.lr_mults.split(",")]
    except ValueError:
        raise SystemExit(f"--lr-mults {args.lr_mults!r}: expected numbers separated by commas, e.g. 0.5,1,2") from None
    if args.seeds < 1 or args.jobs < 1:
        raise SystemExit("--seeds and --jobs must be >= 1")
    args.ablations = []
    for spec in args.ablation:
        child, sep, parent = spec.partition("=")
        if not sep or not child or not parent:
            raise SystemExit(f"--ablation {spec!r}: expected CHILD=PARENT, two arm names")
        args.ablations.append((child, parent))
    if args.data is not None and not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data} is not a folder of token shards")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    base = [f"experiment={args.experiment}", f"device={args.device}"]
    base += [f"data.dir={Path(args.data).resolve()}"] if args.data else []
    base += [f"train.max_steps={args.steps}"] if args.steps else []
    base += [f"train.val_every={args.val_every}"] if args.val_every else []
    base += [f"train.val_tokens={args.val_tokens}"] if args.val_tokens else []
    base += list(args.common)
    table = {**ARMS, **parse_arm_specs(args.arm)}
    names = args.arms or list(ARMS) + [n for n in table if n not in ARMS]
    if args.reference not in names:
        names = [args.reference] + names
    unknown = sorted({n for pair in args.ablations for n in pair} - set(names))
    if unknown:
        raise SystemExit(f"--ablation names arms not in this run: {unknown}; add them to --arms")
    arms = resolve_arms(names, base, table, args.extra)
    live = [a for a in arms if not a.alias_of]
    grids = {a.name: lr_grid(a, args.center, args.mults, args.lrs) for a in live}
    by_name = {a.name: a for a in live}
    plan = {run_name(a.name, lr, s): train_overrides(base, a, lr, s)
            for a in live for lr in grids[a.name] for s in range(args.seeds)}
    n_runs = sum(len(g) + args.seeds - 1 for g in grids.values())
    print(f"{len(live)} arms to run ({len(arms) - len(live)} aliases), {args.seeds} seeds at each chosen lr: {n_runs} "
          f"runs (+ up to {args.seeds - 1} per arm whose best lr is not its middle one)", flush=True)
    for a in arms:
        print(f"  {a.name:18s} " + (f"= {a.alias_of} (identical config)" if a.alias_of else
                                    f"lrs {grids[a.name]}  {' '.join(a.overrides)}"), flush=True)
    if args.dry_run:
        return
    check_folders(Path(args.out_runs), plan)
    results: dict[tuple[str, float, int], dict] = {}
    t_start = time.time()
    if args.report_only:
        for a in live:
            for lr in grids[a.name]:
                for s in range(args.seeds):
                    res = load_run(Path(args.out_runs) / run_name(a.name, lr, s))
                    if res is not None:
                        results[(a.name, lr, s)] = res
    else:
        run_all(args, base, by_name, grids, results)
    chosen = {a.name: chosen_lr(results, a.name, grids[a.name]) for a in live}
    expected = {(a.name, lr, 0) for a in live for lr in grids[a.name]}
    expected |= {(n, c, s) for n, c in chosen.items() if c is not None for s in range(1, args.seeds)}
    setup = {"command": " ".join(["python -m benchmarks.optim.run", *(argv if argv is not None else sys.argv[1:])]),
             "base": base, "reference": args.reference, "also_vs": args.also_vs, "goal_ratio": args.goal_ratio,
             "ablations": args.ablations,
             "seeds": args.seeds, "lr_mults": args.lr_mults, "explicit_grids": bool(args.lrs),
             "steps": args.steps, "device": args.device, "machine": machine(args.device, args.jobs, args.threads),
             "wall_min": (time.time() - t_start) / 60, "missing": sorted(run_name(*k) for k in expected - results.keys()),
             "title": args.title or f"{args.experiment} on {args.device.upper()}",
             "notes": Path(args.notes).read_text() if args.notes else ""}
    write_report(Path(args.report), arms, results, grids, chosen, setup)


def run_all(args, base: list[str], arms: dict[str, Arm], grids: dict, results: dict) -> None:
    """Launch the plan in priority order (the pool starts jobs in submission order), so that if time
    runs out the most useful runs exist: every arm's middle lr, then the other seeds of that lr
    (speculatively: the likely winner), then the rest of the sweep. An arm whose sweep picks another
    lr gets that lr's seeds queued when its sweep ends."""
    pending = {n: len(g) for n, g in grids.items()}
    mid = {n: g[(len(g) - 1) // 2] for n, g in grids.items()}
    jobs = [(n, mid[n], 0) for n in arms]
    jobs += [(n, mid[n], s) for s in range(1, args.seeds) for n in arms]
    jobs += [(n, lr, 0) for i in range(max(map(len, grids.values()))) for n in arms
             for lr in grids[n][i:i + 1] if lr != mid[n]]
    submitted = set(jobs)

    def submit(pool, job):
        n, lr, s = job
        return pool.submit(lambda: (job, launch(args, train_overrides(base, arms[n], lr, s), run_name(n, lr, s))))

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {submit(pool, j) for j in jobs}
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                (n, lr, s), res = fut.result()
                if res is not None:
                    results[(n, lr, s)] = res
                if s == 0:
                    pending[n] -= 1
                    best = chosen_lr(results, n, grids[n]) if pending[n] == 0 else None
                    if best is not None:
                        extra = {(n, best, k) for k in range(1, args.seeds)} - submitted
                        futures |= {submit(pool, j) for j in sorted(extra)}
                        submitted |= extra


def machine(device: str, jobs: int, threads: int) -> str:
    """One line naming the hardware the runs shared, for the report."""
    cores = f"{os.cpu_count()} CPU cores"
    where = f"one {__import__('torch').cuda.get_device_name(0)} and {cores}" if device == "cuda" else cores
    return f"{jobs} runs at a time x {threads} thread(s) on {where}"


if __name__ == "__main__":
    main()
