"""`python -m analysis.compare` and `python -m analysis.significance` as processes, on synthetic run folders."""
import math
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_script
from tests.unit.analysis.test_comparable import smoke_sweep
from tests.unit.analysis.test_compare import write_run


@pytest.mark.e2e
def test_compare_reports_known_crossings_and_plots(tmp_path):
    # crosses 3.28 first at step 300 (3.279), after 300 * 50 ms = 15 s
    fast = write_run(tmp_path / "fast", [10.9, 4.0, 3.5, 3.279, 3.27])
    slow = write_run(tmp_path / "slow", [10.9, 4.2, 3.6, 3.4, 3.3], ms_per_step=80.0)
    out = tmp_path / "plot.png"
    proc = run_script("analysis.compare", str(fast), str(slow), "--record", "record20_sub3min", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split()[0]: ln.split() for ln in proc.stdout.splitlines() if ln.split()}
    assert lines["fast"][1:4] == ["300", "0.001B", "15.0"]
    assert math.isclose(float(lines["fast"][5]), 15000 / 179527, rel_tol=1e-3)  # time ratio to the record
    assert "not" in lines["slow"] and lines["slow"][1] == "-"
    assert out.stat().st_size > 10_000
    # one run folder: the plot lands in it by default
    proc = run_script("analysis.compare", str(fast), "--record", "record05_modernarch")
    assert proc.returncode == 0 and (fast / "compare_record05_modernarch.png").exists()
    assert "record record05_modernarch: reached at step 5000" in proc.stdout


@pytest.mark.e2e
def test_significance_cli_on_run_folders(tmp_path):
    runs = [write_run(tmp_path / f"seed{i}", [10.9, 3.5, v], seed=i) for i, v in enumerate([3.270, 3.271, 3.272])]
    proc = run_script("analysis.significance", *map(str, runs))
    assert proc.returncode == 0, proc.stderr
    assert "n=3 mean=3.27100 std=0.00100" in proc.stdout and "verdict: SIGNIFICANT" in proc.stdout


@pytest.mark.e2e
def test_python_m_analysis_from_the_command_line():
    proc = run_script("analysis", "--help")
    assert proc.returncode == 0 and "significance" in proc.stdout
    proc = run_script("analysis", "nope")
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1


@pytest.mark.e2e
def test_a_sweeps_shell_glob_as_the_readme_prints_it(tmp_path):
    """`python -m analysis significance --rule track3 outputs/multirun/<sweep>/*` through a shell: Hydra's
    multirun.yaml is skipped with a note; a synthetic-data sweep is refused against 3.28 (exit 2), judged
    against a target of its own (exit 0), and refused against a record (exit 2)."""
    sweep = smoke_sweep(tmp_path / "sweep")

    def shell(args: str) -> subprocess.CompletedProcess:
        return subprocess.run(f"{shlex.quote(sys.executable)} -m analysis {args}", shell=True, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    proc = shell(f"significance --rule track3 {shlex.quote(str(sweep))}/*")
    assert proc.returncode == 2 and "refusing to judge these runs against 3.28" in proc.stderr
    assert "note: skipped 1 file(s) that hold no run" in proc.stdout and "holds no validation points" not in proc.stderr
    proc = shell(f"significance --rule track3 --target 1.3 {shlex.quote(str(sweep))}/*")
    assert proc.returncode == 0 and "verdict: SIGNIFICANT" in proc.stdout, proc.stderr
    proc = shell(f"compare {shlex.quote(str(sweep))} --record record20_sub3min")
    assert proc.returncode == 2 and "which they are not like" in proc.stderr and "time_ratio" not in proc.stdout
