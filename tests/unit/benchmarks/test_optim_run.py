"""benchmarks/optim/run.py's orchestration with fake runs (a stand-in writes each run's metrics.jsonl
in milliseconds): the plan and its priority order, the lr choice and the seeds that follow it, reuse
of finished runs, refusal of a folder made by other overrides, restart of a run that died, and the
report. One real end-to-end benchmark of tiny smoke runs: tests/e2e/test_optim_benchmark.py."""
import json
import math

import pytest

import benchmarks.optim.run as bench_optim

ARMS = ["muon", "dual", "dual-lanton"]
BASE = ["--experiment", "smoke", "--steps", "400", "--lr-mults", "0.5,1,2", "--jobs", "1",
        "--center", "muon=0.04", "--center", "dual*=0.04", "--arms", *ARMS]
# made-up quality: dual-lanton is best, dual trails Muon; the best lr is 0.08 for dual-lanton, 0.04 else
OFFSET = {"muon": 0.0, "dual": 0.02, "dual-lanton": -0.4}
BEST_LR = {"muon": 0.04, "dual": 0.04, "dual-lanton": 0.08}


def fake_curve(overrides: list[str]) -> list[float]:
    ov = dict(o.split("=", 1) for o in overrides)
    arm = "dual-lanton" if ov.get("optim.lanton") == "true" else ov["optim"]
    lr, seed = float(ov["optim.lr"]), int(ov["seed"])
    shift = OFFSET[arm] + 0.2 * math.log2(lr / BEST_LR[arm]) ** 2 + 0.003 * ((seed * 7919) % 5 - 2)
    return [4.0 + 6.0 * math.exp(-s / 200) + shift for s in range(0, 401, 50)]


class FakeTrain:
    """Stands in for the train.py process: writes metrics.jsonl, records the launch order."""

    def __init__(self, fail_first: set[str] = frozenset()):
        self.launched, self.fail_first = [], set(fail_first)

    def __call__(self, cmd, run_dir, env):
        overrides = [c for c in cmd[2:] if not c.startswith("hydra.run.dir=")]
        assert env["OMP_NUM_THREADS"] == "1"
        self.launched.append(run_dir.name)
        if run_dir.name in self.fail_first:  # dies without a checkpoint (OOM-killed, say)
            self.fail_first.discard(run_dir.name)
            (run_dir / "metrics.jsonl").write_text('{"event": "val", "step": 0, "val_loss": 10.0')
            return -9
        vals = fake_curve(overrides)
        lines = [{"event": "val", "step": s, "val_loss": v, "train_time_ms": 10.0 * s}
                 for s, v in zip(range(0, 401, 50), vals)]
        lines.append({"event": "summary", "final_val_loss": vals[-1], "train_time_ms": 4000.0, "steps": 400})
        (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        return 0


def bench(tmp_path, monkeypatch, fake, *extra):
    monkeypatch.setattr(bench_optim, "run_process", fake)
    bench_optim.main([*BASE, "--seeds", "4", "--out-runs", str(tmp_path / "runs"),
                      "--report", str(tmp_path / "report.md"), *extra])
    report = tmp_path / "report.md"
    return report.read_text() if report.exists() else None


def test_plan_priority_lr_choice_seeds_and_report(tmp_path, monkeypatch):
    fake = FakeTrain()
    text = bench(tmp_path, monkeypatch, fake)
    order = fake.launched
    # first every arm's middle lr, then its other seeds (speculatively), then the rest of the sweep
    assert order[:3] == ["muon_lr0.04_s0", "dual_lr0.04_s0", "dual-lanton_lr0.04_s0"]
    assert set(order[3:12]) == {f"{a}_lr0.04_s{s}" for a in ARMS for s in (1, 2, 3)}
    assert set(order[12:18]) == {f"{a}_lr{lr}_s0" for a in ARMS for lr in (0.02, 0.08)}
    # dual-lanton's sweep picks 0.08: its seeds 1-3 follow; 3 arms x (3 lrs + 3 seeds) + 3 = 21 runs
    assert set(order[18:]) == {f"dual-lanton_lr0.08_s{s}" for s in (1, 2, 3)} and len(order) == 21
    assert "| dual-lanton | 0.02: " in text and "0.08 (edge) |" in text
    assert "Reference: **muon**" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| arm | lr | seeds |")).split("|")
    row = next(line for line in lines if line.startswith("| dual-lanton | 0.08 | 4 |")).split("|")
    cell = dict(zip((h.strip() for h in header), (c.strip() for c in row)))
    assert 0.5 < float(cell["vs muon"]) < 0.9  # 0.4 nats better: Muon's final loss well before step 400
    assert float(cell["p goal"]) < 0.01
    assert "**met** by dual-lanton" in text
    assert (tmp_path / "report.png").exists()
    # dual's variants against dual: the made-up dual trails Muon by 0.02
    assert "gap dual - muon = 0.0200" in text
    # rerun: everything is reused, nothing launched, the same report
    again = FakeTrain()
    assert bench(tmp_path, monkeypatch, again).split("## Results")[1] == text.split("## Results")[1]
    assert again.launched == []


def test_a_folder_of_other_overrides_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "muon_lr0.04_s0"
    folder.mkdir(parents=True)
    (folder / bench_optim.RECORD).write_text(json.dumps({"overrides": ["experiment=smoke", "optim=adamw"]}))
    with pytest.raises(SystemExit, match="muon_lr0.04_s0 holds a run of other overrides"):
        bench(tmp_path, monkeypatch, FakeTrain())


def test_a_run_that_died_is_moved_aside_and_rerun(tmp_path, monkeypatch):
    fake = FakeTrain(fail_first={"dual_lr0.04_s0"})
    text = bench(tmp_path, monkeypatch, fake, "--seeds", "1", "--arms", "muon", "dual")
    assert fake.launched.count("dual_lr0.04_s0") == 2
    assert len(list((tmp_path / "runs").glob("dual_lr0.04_s0.incomplete-*"))) == 1
    assert "| dual | 0.04 | 1 |" in text


def test_dry_run_lists_arms_aliases_and_run_count(tmp_path, monkeypatch, capsys):
    fake = FakeTrain()
    bench(tmp_path, monkeypatch, fake, "--dry-run", "--arms", "muon", "dual", "dual-muon-rates")
    out = capsys.readouterr().out
    assert "2 arms to run (1 aliases)" in out and "dual-muon-rates    = dual" in out and "12 runs" in out
    assert fake.launched == [] and not (tmp_path / "report.md").exists()
    # an explicit grid for some arms (--lrs), the common grid for the others
    bench(tmp_path, monkeypatch, fake, "--dry-run", "--arms", "muon", "dual", "--lrs", "dual=0.01,0.02,0.03,0.04")
    out = capsys.readouterr().out
    assert "lrs [0.01, 0.02, 0.03, 0.04]" in out and "lrs [0.02, 0.04, 0.08]" in out and "13 runs" in out
    with pytest.raises(SystemExit, match="--center 'muon': expected GLOB=LR"):
        bench(tmp_path, monkeypatch, fake, "--dry-run", "--center", "muon")
    # --ablation CHILD=PARENT names two arms of this run
    with pytest.raises(SystemExit, match=r"--ablation names arms not in this run: \['dual-lanton'\]"):
        bench(tmp_path, monkeypatch, fake, "--dry-run", "--arms", "muon", "dual", "--ablation", "dual-lanton=dual")
    with pytest.raises(SystemExit, match="expected CHILD=PARENT"):
        bench(tmp_path, monkeypatch, fake, "--dry-run", "--ablation", "dual")


def test_switch_cost_measures_every_arm_on_a_tiny_model():
    import time

    import torch

    import benchmarks.switch_cost as cost
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = cost.measure(dict(n_layer=1, n_head=2, n_embd=32, vocab_size=64), 1, 16, 1, 2, torch.device("cpu"),
                           time.thread_time)
    finally:
        torch.set_num_threads(threads)
    assert set(res) == set(cost.ARMS) and all(0 < o <= t for o, t in res.values())


def test_verdict_names_the_closest_arm_when_none_reaches_the_target():
    from types import SimpleNamespace

    from benchmarks.optim.report import _verdict_section
    arm = lambda name, optim: SimpleNamespace(name=name, config={"optim": {"name": optim}})
    entry = lambda final: {"ratio": math.inf, "final": (final, 0.01), "runs": [{}] * 4, "p_goal": 1.0}
    summary = {"muon": {"ratio": 1.0, "final": (6.94, 0.01), "runs": [{}] * 4, "p_goal": math.nan},
               "dual": entry(7.00), "dual-rates": entry(6.96)}
    arms = [arm("muon", "muon"), arm("dual", "dual"), arm("dual-rates", "dual")]
    text = "\n".join(_verdict_section(arms, summary, {"target": 6.94}, "muon", 0.83))
    assert "no dual-family arm reaches muon's final loss (6.9400)" in text
    assert "the closest is dual-rates at 6.9600 (4 seeds)" in text and "not reachedx" not in text
