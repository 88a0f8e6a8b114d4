"""scripts/optim_report.py: steps-to-target, verdicts and the written report, on made-up curves."""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from optim_report import steps_to, write_report  # noqa: E402

STEPS = [0, 100, 200, 300, 400]


def run(vals, ms=100.0):
    return {"steps": STEPS, "val": vals, "time_s": [s * ms / 1000 for s in STEPS], "final": vals[-1],
            "ms_per_step": ms, "train_steps": [], "train_loss": []}


def test_steps_to_interpolates_in_steps_and_time():
    r = run([10.0, 8.0, 7.0, 6.5, 6.0], ms=50.0)
    assert steps_to(r, 7.5) == 150.0
    assert steps_to(r, 7.5, "time_s") == 7.5
    assert steps_to(r, 10.0) == 0.0
    assert math.isinf(steps_to(r, 5.0))


def test_report_verdicts(tmp_path):
    lrs = {"adamw": [1e-3], "muon": [0.05], "dual": [0.05]}
    results = {("adamw", 1e-3, 0): run([10.0, 8.5, 8.0, 7.5, 7.0]), ("adamw", 1e-3, 1): run([10.0, 8.5, 8.0, 7.5, 7.0]),
               ("muon", 0.05, 0): run([10.0, 7.4, 6.8, 6.5, 6.3]), ("muon", 0.05, 1): run([10.0, 7.4, 6.8, 6.5, 6.3]),
               ("dual", 0.05, 0): run([10.0, 7.0, 6.9, 6.4, 6.2]), ("dual", 0.05, 1): run([10.0, 7.0, 6.9, 6.4, 6.2])}
    setup = {"command": "python scripts/bench_optim.py", "wall_min": 1.0, "steps": 400, "batch_seqs": 2, "seq_len": 256,
             "warmup_frac": 0.05, "val_tokens": 4096, "val_every": 100, "jobs": 2, "threads": 1, "extra": {},
             "missing": [], "probes": {}, "notes": "## Notes\n\nhand-written context"}
    out = tmp_path / "optim.md"
    write_report(out, results, lrs, {o: v[0] for o, v in lrs.items()}, setup)
    text = out.read_text()
    assert (tmp_path / "optim.png").stat().st_size > 10_000
    assert "Target = AdamW's final val loss at its chosen lr, mean over seeds: **7.0000**" in text
    # dual crosses 7.0 at step 100 + 100 * (7.0 - 7.0) / ... = 100; AdamW at 400 -> 0.25x
    assert "dual reaches AdamW's final val loss in 0.25x AdamW's steps" in text and "**met**" in text
    # dual is worse than Muon at step 200 (6.9 vs 6.8): the verdict must say so, with the step
    assert "NOT met at steps 200" in text
    assert text.rstrip().endswith("hand-written context")
