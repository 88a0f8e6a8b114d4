"""Per-step cost of each optimizer switch against plain `dual`, on CPU (or one GPU), in one process.

For each model shape, one model + optimizer per arm (same init), real gradients from a fixed batch;
the arms are timed in interleaved segments (arm order rotated every repeat, so drift and machine
load hit every arm alike): each segment runs K steps and records the optimizer step's time and the
whole step's (forward + backward + optimizer). Figures: the median over repeats of each segment's
mean ms per step. cautious_wd needs a decay: its arm is compared with dual at the same decay.

    python -m benchmarks.switch_cost --repeats 7 --steps 5 --out results/benchmarks/switch_cost_cpu.md
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from common.atomic_io import write_text_atomic
from common.paths import REPO
from model.config import ModelConfig
from model.gpt import GPT
from optim import build_optimizer
from optim.hybrid_config import DualConfig

WD = 0.05
ARMS = {  # name -> DualConfig overrides
    "dual": {}, "dual-lanton": {"lanton": True}, "dual-normuon": {"normuon": True},
    "dual-wd": {"weight_decay": WD}, "dual-cwd": {"weight_decay": WD, "cautious_wd": True},
    "dual-all": {"lanton": True, "normuon": True, "weight_decay": WD, "cautious_wd": True},
}
BASELINE = {"dual-cwd": "dual-wd", "dual-all": "dual-wd"}  # compare with the same decay on
SHAPES = {  # name -> (ModelConfig fields, batch sequences, sequence length)
    "cpu_fineweb model: 4 x 128, vocab 50257": (dict(n_layer=4, n_head=4, n_embd=128, vocab_size=50257), 2, 256),
    "hidden-heavy: 4 x 256, vocab 4096": (dict(n_layer=4, n_head=4, n_embd=256, vocab_size=4096), 2, 256),
}


def setup(shape: dict, overrides: dict, device: torch.device):
    torch.manual_seed(0)
    model = GPT(ModelConfig(block_size=256, tie_embeddings=False, **shape)).to(device)
    cfg = DualConfig(lr=0.03, momentum_warmup_steps=0, **overrides)
    return model, build_optimizer(cfg, list(model.named_parameters()), model.param_roles())


def segment(model, opt, x, y, steps: int, device: torch.device, clock) -> tuple[float, float]:
    """Mean (optimizer ms, whole-step ms) per step over `steps` steps, on `clock` (seconds)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opt_ms = total_ms = 0.0
    for _ in range(steps):
        sync()
        t0 = clock()
        model(x, y).backward()
        sync()
        t1 = clock()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t2 = clock()
        opt_ms += 1000 * (t2 - t1)
        total_ms += 1000 * (t2 - t0)
    return opt_ms / steps, total_ms / steps


def measure(shape: dict, batch: int, seq: int, steps: int, repeats: int, device: torch.device, clock) -> dict:
    built = {name: setup(shape, ov, device) for name, ov in ARMS.items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, shape["vocab_size"], (batch, seq), generator=g).to(device)
    y = torch.roll(x, -1, dims=1)
    for model, opt in built.values():  # warm-up: first-step allocations, lazily created state
        segment(model, opt, x, y, 2, device, clock)
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in ARMS}
    names = list(ARMS)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(segment(*built[name], x, y, steps, device, clock))
    return {n: (statistics.median(o for o, _ in v), statistics.median(t for _, t in v)) for n, v in times.items()}


def load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unavailable"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.switch_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed segment")
    ap.add_argument("--repeats", type=int, default=7, help="segments per arm (the median is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the benchmark's runs use 1)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--clock", choices=("thread", "wall"), default="thread",
                    help="thread: this thread's CPU time (CPU with 1 thread: robust to other load on the cores); wall")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "switch_cost_cpu.md"))
    ap.add_argument("--notes", default=None, help="markdown file appended to the report")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "thread" and (device.type == "cuda" or args.threads != 1):
        raise SystemExit("--clock thread measures this thread's CPU time: use it with --device cpu --threads 1 (else --clock wall)")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    before, t0 = load(), time.time()
    rows = {}
    for title, (shape, batch, seq) in SHAPES.items():
        rows[title] = measure(shape, batch, seq, args.steps, args.repeats, device, clock)
        print(title, {k: tuple(round(x, 1) for x in v) for k, v in rows[title].items()}, flush=True)
    after = load()
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    L = [f"# Per-step cost of the optimizer switches vs plain dual ({args.device.upper()})", "",
         f"Command: `python -m benchmarks.switch_cost {' '.join(argv if argv is not None else sys.argv[1:])}` "
         f"({(time.time() - t0) / 60:.1f} min), torch {torch.__version__}, {args.threads} thread(s), {where}.  ",
         f"Machine load: {before} before, {after} after (other work shares these cores: figures are noisy).  ",
         f"Method: one model + optimizer per arm, one fixed batch of {SHAPES[next(iter(SHAPES))][1]} x "
         f"{SHAPES[next(iter(SHAPES))][2]} tokens, {args.repeats} interleaved segments of {args.steps} steps per "
         "arm (order rotated each repeat); median over segments of the mean ms per step"
         + (" of this thread's CPU time (with 1 torch thread all the work runs on it; waits in the run queue "
            "behind other work are not counted, time a hypervisor steals is)" if args.clock == "thread" else
            " (wall clock)") +
         ". `opt` = optimizer.step() "
         f"alone, `step` = forward + backward + optimizer. cautious_wd needs a decay: dual-cwd and dual-all are "
         f"compared with dual-wd (dual at weight_decay={WD}), the others with dual.", ""]
    for title, res in rows.items():
        L += [f"## {title}", "", "| arm | opt ms | step ms | opt vs its baseline | step vs its baseline |",
              "|---|---|---|---|---|"]
        for name, (o, t) in res.items():
            b = BASELINE.get(name, "dual")
            bo, bt = res[b]
            rel = "-" if name == b else f"{o / bo:.2f}x ({o - bo:+.1f} ms) vs {b}"
            L.append(f"| {name} | {o:.1f} | {t:.1f} | {rel} | " + ("-" if name == b else f"{t / bt:.2f}x vs {b}") + " |")
        L.append("")
    if args.notes:
        L += [Path(args.notes).read_text().rstrip(), ""]
    write_text_atomic(Path(args.out), "\n".join(L))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
