"""Newton-Schulz micro-benchmark: `optim.orthogonalize` against torch.linalg.svd.

For each shape (768x768, 768x3072 and a batch of 12 x 768x3072, GPT-2-small's square and MLP
matrices) and each method, times orthogonalize (median of --reps runs after one warm-up) and
the SVD route to U V^T, and measures the relative error ||NS(G) - U V^T||_F / ||U V^T||_F and the
range of the output's singular values on Gaussian inputs. Writes a markdown table.

    python scripts/bench_ns.py                       # CPU, fp32 -> results/benchmarks/ns_cpu.md
    python scripts/bench_ns.py --device cuda --out results/benchmarks/ns_gpu.md   # bf16 NS
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.atomic_io import write_text_atomic  # noqa: E402
from optim import orthogonalize  # noqa: E402
from optim.newton_schulz import METHODS, default_dtype, schedule  # noqa: E402

SHAPES = [(768, 768), (768, 3072), (12, 768, 3072)]


def timed(fn, reps: int, device: torch.device) -> float:
    """Median wall time in seconds of fn() over reps runs, after one untimed warm-up."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def svd_polar(G: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="results/benchmarks/ns_cpu.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    work_dtype = default_dtype(device)
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    load_before = os.getloadavg()[0]
    for shape in SHAPES:
        G = torch.randn(*shape, generator=gen, device=device)
        t_svd = timed(lambda: svd_polar(G), args.reps, device)
        ref = svd_polar(G.double())
        print(f"{shape}: svd {t_svd * 1e3:.1f} ms", flush=True)
        for method in METHODS:
            steps = len(schedule(method))
            t_ns = timed(lambda: orthogonalize(G, method), args.reps, device)
            out = orthogonalize(G, method).double()
            err = ((out - ref).norm() / ref.norm()).item()
            s = torch.linalg.svdvals(out.reshape(-1, *shape[-2:]))
            rows.append((shape, method, steps, t_ns, t_svd, err, s.min().item(), s.max().item()))
            print(f"  {method:14s} {t_ns * 1e3:9.1f} ms  svd/ns {t_svd / t_ns:5.2f}  err {err:.4f}  "
                  f"s in [{s.min():.3f}, {s.max():.3f}]", flush=True)
    write_report(Path(args.out), rows, device, work_dtype, args.reps, (load_before, os.getloadavg()[0]))


def write_report(path: Path, rows, device, work_dtype, reps, load) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [
        f"# Newton-Schulz vs SVD ({device.type})", "",
        f"Command: `python scripts/bench_ns.py --device {device.type}`  ",
        f"Machine: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads; NS in {work_dtype}, "
        f"SVD in fp32; median of {reps} runs after a warm-up. Inputs: standard Gaussian.  ",
        f"1-minute load average {load[0]:.1f} before and {load[1]:.1f} after the run (timings on a shared "
        "machine are inflated and noisy when it exceeds the core count).  ",
        "Error: ||NS(G) - U V^T||_F / ||U V^T||_F against an fp64 SVD; s: output singular values.", "",
        "| shape | method | NS steps | NS time (ms) | SVD time (ms) | SVD / NS | rel. error | s min | s max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, method, steps, t_ns, t_svd, err, smin, smax in rows:
        lines.append(f"| {'x'.join(map(str, shape))} | {method} | {steps} | {t_ns * 1e3:.1f} | {t_svd * 1e3:.1f} | "
                     f"{t_svd / t_ns:.2f} | {err:.4f} | {smin:.3f} | {smax:.3f} |")
    lines.append("")
    write_text_atomic(path, "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
