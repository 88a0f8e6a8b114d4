"""benchmarks/optim/run.py for real: one end-to-end benchmark of tiny smoke runs (train.py processes)."""
import pytest


@pytest.mark.e2e
def test_tiny_real_benchmark_end_to_end(tmp_path):
    """Real train.py runs (smoke, 4 steps): 2 arms, 2 lrs, 2 seeds; the report is written."""
    from tests.conftest import run_script
    proc = run_script("benchmarks.optim.run", "--experiment", "smoke", "--steps", "4",
                      "--val-every", "2", "--set", "train.val_tokens=4096", "--arms", "muon", "dual-normuon",
                      "--extra", "muon:model.tie_embeddings=false", "--center", "*=0.05", "--lr-mults", "1,2",
                      "--seeds", "2", "--jobs", "2", "--out-runs", str(tmp_path / "runs"),
                      "--report", str(tmp_path / "r.md"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (tmp_path / "r.md").read_text()
    assert "| dual-normuon |" in text and "Reference: **muon**" in text and "**Incomplete**" not in text
    # 2 arms x 2 lrs, seed 1 at the middle lr (speculative), seed 1 at the best lr if it is the other one
    runs = {p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()}
    assert {"muon_lr0.05_s1", "dual-normuon_lr0.05_s1", "muon_lr0.1_s0", "dual-normuon_lr0.1_s0"} <= runs
    assert 6 <= len(runs) <= 8 and not any("incomplete" in r for r in runs)
