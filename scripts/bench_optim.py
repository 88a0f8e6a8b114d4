"""Side-by-side optimizer benchmark: AdamW vs Muon vs dual, driven through train.py (CPU or one GPU).

Every run is `train.py experiment=cpu_fineweb` (4 layers x 128, GPT-2 vocabulary, untied head,
seq 256) on the FineWeb sample, with the same data order (the contiguous loader does not depend on
the seed), the same schedule and the same step budget; only the optimizer, its lr and the init
seed change. Phase 1 sweeps optim.lr (seed 0, full length); the best final val loss picks each
optimizer's lr; phase 2 reruns that lr with the other seeds. Runs are cached: a run folder whose
metrics.jsonl already holds a summary is reused, so an interrupted benchmark resumes.

    python scripts/bench_optim.py --data /work/shared/corpora/fineweb-sample/tokens --jobs 2

Writes results/benchmarks/optim_cpu.md and optim_cpu.png (see scripts/optim_report.py). On a GPU,
`--device cuda --jobs 4 --report results/benchmarks/optim_gpu.md` runs the same benchmark with the
trainer's CUDA defaults (bf16 autocast, NS in bf16), several runs sharing the one GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from optim_report import write_report  # noqa: E402

# Around each optimizer's default; AdamW's range from a 100-step probe on this model (3e-3 beat 1e-2
# and 3e-2 without warmup; the benchmark adds a 5% warmup, which favours somewhat higher rates).
DEFAULT_LRS = {"adamw": [2e-3, 4e-3, 8e-3], "muon": [0.025, 0.05, 0.1], "dual": [0.025, 0.05, 0.1]}


def parse_lrs(specs: list[str]) -> dict[str, list[float]]:
    """["adamw=1e-3,3e-3", ...] -> {"adamw": [1e-3, 3e-3]} (defaults for optimizers not given)."""
    lrs = dict(DEFAULT_LRS)
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in DEFAULT_LRS or not values:
            raise SystemExit(f"--lrs {spec!r}: expected NAME=LR,LR,... with NAME in {sorted(DEFAULT_LRS)}")
        lrs[name] = [float(v) for v in values.split(",")]
    return lrs


def run_name(opt: str, lr: float, seed: int) -> str:
    return f"{opt}_lr{lr:g}_s{seed}"


def load_run(run_dir: Path) -> dict | None:
    """Val curve and timing of a finished run, or None if it has not finished."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run
    summary = next((e for e in events if e.get("event") == "summary"), None)
    if summary is None:
        return None
    vals = sorted({e["step"]: e for e in events if e.get("event") == "val"}.values(), key=lambda e: e["step"])
    trains = [e for e in events if e.get("event") == "train"]
    return {"steps": [e["step"] for e in vals], "val": [e["val_loss"] for e in vals],
            "time_s": [e["train_time_ms"] / 1000 for e in vals], "final": summary["final_val_loss"],
            "ms_per_step": summary["train_time_ms"] / max(1, summary["steps"]),
            "train_steps": [e["step"] for e in trains], "train_loss": [e["train_loss"] for e in trains]}


def launch(args, opt: str, lr: float, seed: int, attempts: int = 6) -> tuple[str, float, int, dict | None]:
    """Run train.py for one (optimizer, lr, seed) unless cached; returns its parsed metrics.

    A run stopped by SIGTERM writes a checkpoint and exits; it is relaunched in the same folder and
    resumes (resume=auto), so the curve continues exactly. A run that died without a checkpoint is
    moved aside and restarted from scratch (metrics.jsonl is appended to, so two runs must not share
    a folder)."""
    run_dir = Path(args.out_runs) / run_name(opt, lr, seed)
    # Another driver may be running this very run (its log still grows): wait for it rather than
    # start a second copy in the same folder.
    log_file = run_dir / "stdout.log"
    while load_run(run_dir) is None and log_file.exists() and time.time() - log_file.stat().st_mtime < 300:
        time.sleep(30)
    cached = load_run(run_dir)
    if cached is not None:
        print(f"[cached] {run_dir.name}: final val {cached['final']:.4f}", flush=True)
        return opt, lr, seed, cached
    tokens = args.batch_seqs * args.seq_len
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=cpu_fineweb", f"data.dir={args.data}",
           f"optim={opt}", f"optim.lr={lr}", f"seed={seed}", "model.tie_embeddings=false",
           f"train.max_steps={args.steps}", f"train.val_every={args.val_every}", f"train.val_tokens={args.val_tokens}",
           f"train.seq_len={args.seq_len}", f"train.micro_batch_seqs={args.batch_seqs}",
           f"train.global_batch_tokens={tokens}", f"train.warmup_frac={args.warmup_frac}", "train.log_every=10",
           f"device={args.device}", f"hydra.run.dir={run_dir}", *args.extra.get(opt, [])]
    # One thread per run: on a shared 2-core machine, oversubscribed OpenMP threads spin and
    # make a step ~10x slower than a single thread.
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    t0 = time.time()
    result, rc = None, None
    for attempt in range(attempts):
        resumable = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
        if run_dir.exists() and not resumable:
            stale = run_dir.with_name(f"{run_dir.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(stale)
            print(f"[moved aside] unfinished {run_dir.name} -> {stale.name}", flush=True)
        elif resumable:
            print(f"[resume] {run_dir.name} (attempt {attempt + 1})", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "stdout.log", "a") as log:
            rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        result = load_run(run_dir)
        if result is not None or rc not in (0, -15, -9, 143, 137):  # finished, or a real error: stop
            break
    status = f"final val {result['final']:.4f}" if result else f"FAILED rc={rc} (see {run_dir}/stdout.log)"
    print(f"[done {time.time() - t0:.0f}s] {run_dir.name}: {status}", flush=True)
    return opt, lr, seed, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "corpora" / "fineweb-sample" / "tokens"))
    ap.add_argument("--optimizers", nargs="+", default=["adamw", "muon", "dual"])
    ap.add_argument("--lrs", nargs="*", default=[], help="NAME=LR,LR,... (default: %s)" % DEFAULT_LRS)
    ap.add_argument("--seeds", type=int, default=2, help="seeds for the chosen lr (seed 0 is the sweep's run)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-seqs", type=int, default=2, help="sequences per step (one micro-batch)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--warmup-frac", type=float, default=0.05, help="same LR warmup for every optimizer")
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--val-tokens", type=int, default=4096)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out-runs", default=str(ROOT / "outputs" / "bench_optim"))
    ap.add_argument("--report", default=str(ROOT / "results" / "benchmarks" / "optim_cpu.md"))
    ap.add_argument("--extra", nargs="*", default=[], help="NAME:override (e.g. muon:optim.embed_lr=0.06)")
    ap.add_argument("--report-only", action="store_true",
                    help="launch nothing: report from the finished runs in --out-runs (a partial benchmark)")
    ap.add_argument("--probe-dirs", nargs="*", default=[],
                    help="folders of extra short runs (any train.py run folders) to list in the report")
    ap.add_argument("--notes", default=None, help="markdown file appended to the report (context, caveats)")
    args = ap.parse_args()
    lrs = parse_lrs(args.lrs)
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        name, _, override = item.partition(":")
        extra.setdefault(name, []).append(override)
    args.extra = extra
    if not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data} is not a folder of token shards")

    results: dict[tuple[str, float, int], dict] = {}
    pending_sweeps = {opt: len(lrs[opt]) for opt in args.optimizers}
    t_start = time.time()
    if args.report_only:
        for opt in args.optimizers:
            for lr in lrs[opt]:
                for seed in range(args.seeds):
                    res = load_run(Path(args.out_runs) / run_name(opt, lr, seed))
                    if res is not None:
                        results[(opt, lr, seed)] = res
    with _NoPool() if args.report_only else ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # Priority order (the pool starts jobs in submission order), so that if the budget runs out
        # the most useful runs exist: every optimizer's middle lr, then the other seeds of that middle
        # lr (speculatively: the likely winner), then the rest of the sweep. If the sweep picks another
        # lr, its other seeds are queued when the sweep ends.
        mid = {o: lrs[o][(len(lrs[o]) - 1) // 2] for o in args.optimizers}
        jobs = [(o, mid[o], 0) for o in args.optimizers]
        jobs += [(o, mid[o], s) for s in range(1, args.seeds) for o in args.optimizers]
        jobs += [(o, lr, 0) for lr_i in range(max(map(len, lrs.values()))) for o in args.optimizers
                 for lr in lrs[o][lr_i:lr_i + 1] if lr != mid[o]]
        futures = {pool.submit(launch, args, o, lr, s) for o, lr, s in jobs} if not args.report_only else set()
        submitted = set(jobs)
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                opt, lr, seed, res = fut.result()
                if res is not None:
                    results[(opt, lr, seed)] = res
                if seed == 0:
                    pending_sweeps[opt] -= 1
                    if pending_sweeps[opt] == 0:  # sweep of this optimizer finished: seed the best lr
                        best = chosen_lr(results, opt, lrs[opt])
                        extra_jobs = {(opt, best, s) for s in range(1, args.seeds)} - submitted if best else set()
                        futures |= {pool.submit(launch, args, *job) for job in extra_jobs}
                        submitted |= extra_jobs
    chosen = {opt: chosen_lr(results, opt, lrs[opt]) for opt in args.optimizers}
    expected = {(o, lr, 0) for o in args.optimizers for lr in lrs[o]}
    expected |= {(o, chosen[o], s) for o in args.optimizers if chosen[o] for s in range(1, args.seeds)}
    missing = sorted(run_name(*k) for k in expected - results.keys())
    setup = {"data": args.data, "device": args.device, "machine": machine(args.device), "steps": args.steps, "warmup_frac": args.warmup_frac, "batch_seqs": args.batch_seqs, "seq_len": args.seq_len,
             "val_every": args.val_every, "val_tokens": args.val_tokens, "jobs": args.jobs, "threads": args.threads,
             "seeds": args.seeds, "extra": extra, "wall_min": (time.time() - t_start) / 60,
             "command": " ".join(["python scripts/bench_optim.py", *sys.argv[1:]]), "missing": missing,
             "probes": {str(p): load_probes(Path(p)) for p in args.probe_dirs},
             "notes": Path(args.notes).read_text() if args.notes else ""}
    write_report(Path(args.report), results, lrs, chosen, setup)


def machine(device: str) -> str:
    """One line naming the hardware the runs shared, for the report."""
    cores = f"{os.cpu_count()} CPU cores"
    if device == "cuda":
        import torch
        return f"one {torch.cuda.get_device_name(0)} and {cores}"
    return f"a {cores.replace(' CPU cores', '-core')} machine with no GPU"


class _NoPool:
    """Stands in for the process pool with --report-only."""
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def load_probes(folder: Path) -> list[tuple[str, dict, dict]]:
    """(run name, optim config, metrics) of every finished run folder under `folder`."""
    from omegaconf import OmegaConf
    out = []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        res = load_run(run_dir)
        if res is not None and (run_dir / "config.yaml").exists():
            out.append((run_dir.name, OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))["optim"], res))
    return out


def chosen_lr(results: dict, opt: str, lrs: list[float]) -> float | None:
    finals = {lr: results[(opt, lr, 0)]["final"] for lr in lrs if (opt, lr, 0) in results}
    return min(finals, key=finals.get) if finals else None


if __name__ == "__main__":
    main()
