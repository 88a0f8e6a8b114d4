"""The old home of every tool. Each moved to the package of its concern (README.md, 'Layout'); the old
`python -m scripts.NAME` prints the new command in one line and exits 2 (common/moved.py)."""
from common.moved import install

install({
    "scripts.summarize": "python -m analysis summarize",
    "scripts.compare": "python -m analysis compare",
    "scripts.significance": "python -m analysis significance",
    "scripts.mfu": "python -m analysis mfu",
    "scripts.bench_stats": "python -m analysis (its statistics are analysis/stats.py)",
    "scripts.describe": "python -m tools.describe",
    "scripts.stress_teardown": "python -m tools.stress_teardown",
    "scripts.repeat_shards": "python -m tools.repeat_shards",
    "scripts.sample": "python -m inference.sample",
    "scripts.eval_hellaswag": "python -m evals.hellaswag",
    "scripts.bench_ns": "python -m benchmarks.ns",
    "scripts.bench_loader": "python -m benchmarks.loader",
    "scripts.bench_checkpoint": "python -m benchmarks.checkpoint",
    "scripts.bench_overhead": "python -m benchmarks.overhead",
    "scripts.bench_switch_cost": "python -m benchmarks.switch_cost",
    "scripts.bench_optim": "python -m benchmarks.optim.run",
    "scripts.bench_arms": "python -m benchmarks.optim.run (arms: benchmarks/optim/arms.py)",
    "scripts.optim_report": "python -m benchmarks.optim.report",
    "scripts.vs_reference": "python -m benchmarks.vs_reference.run",
    "scripts.vs_reference_report": "python -m benchmarks.vs_reference.report",
})
