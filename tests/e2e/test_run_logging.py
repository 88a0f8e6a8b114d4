"""What a training run logs and keeps, in-process on CPU: optimizer diagnostics (metrics.jsonl, wandb, the
console) off the training clock, per-role learning rates, the attention window, the end-of-run summary line,
and the final weights."""
import math
import time

import pytest
import torch
from omegaconf import OmegaConf

from analysis.runs import read_events
from data.build import build_val_batches
from inference.weights import WEIGHTS_FILE, load_trained
from optim.maps import LinearMap
from tests.support.inprocess import SMOKE, compose_config, run
from tests.support.wandb_records import isolated_wandb_env, offline_runs, read_offline_run

pytestmark = pytest.mark.e2e  # every test runs the training loop in-process (integration)

DUAL = ["optim=dual", "optim.lr=0.05"]


@pytest.mark.e2e  # in-process, but wandb (offline) starts its service process
def test_diag_every_10_reaches_metrics_jsonl_wandb_and_the_console(tmp_path, monkeypatch, capsys):
    for key, value in isolated_wandb_env(tmp_path, monkeypatch).items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    run(run_dir, *DUAL, "optim.diag_every=10", "train.max_steps=20", "train.val_every=0", "train.log_every=5",
        "logger=wandb", "logger.mode=offline")
    events = read_events(run_dir / "metrics.jsonl")
    diags = [e for e in events if e["event"] == "diag"]
    assert [e["step"] for e in diags] == [10, 20] and all(e["tokens"] == e["step"] * 4096 for e in diags)
    for e in diags:
        assert 0 < e["ns_error"] < 0.5 and 0 < e["ns_sv_max"] < 2 and 0.85 <= e["momentum"] <= 0.95
        assert {"update_norm/attn_qkv", "update_norm/mlp_out", "update_norm/embed_head", "update_rms/gain"} <= e.keys()
        assert all(math.isfinite(v) for k, v in e.items() if k != "event")
    # the update norm of a linear-map role is its rate: spectral-scaled orthogonal updates have norm ~1
    lr_qkv = next(e for e in events if e["event"] == "train" and e["step"] == 10)["lr/attn_qkv"]
    assert diags[0]["update_norm/attn_qkv"] == pytest.approx(lr_qkv, rel=0.3)

    import wandb
    wandb.teardown()  # in-process: wait for wandb's service to finish writing the run file (train.py: at exit)
    files = offline_runs(run_dir)
    assert len(files) == 1
    history = read_offline_run(files[0])["history"]
    rows = [h for h in history if "diag/ns_error" in h]
    assert [h["_step"] for h in rows] == [10, 20]
    assert rows[0]["diag/update_norm/attn_qkv"] == pytest.approx(diags[0]["update_norm/attn_qkv"])
    trains = [h for h in history if "train/loss" in h]
    assert trains and all({"lr/attn_qkv", "lr/embed_head", "lr/factor", "train/tokens_per_s"} <= h.keys() for h in trains)

    out = capsys.readouterr().out
    assert "step:10/20 diag momentum:" in out and "| update_norm embed_head:" in out


def test_diagnostics_are_not_training_time(tmp_path, monkeypatch):
    """The diagnostics' fp64 work (the NS error, the linear maps' spectral norms) is made to 'take' 1000 s
    of wall-clock each time (a shifted perf_counter); train_time_ms must not see any of it."""
    shift = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + shift[0])
    slow_ns, slow_norm = LinearMap.ns_error, LinearMap.norm

    def ns_error(self, *args):
        shift[0] += 1000.0
        return slow_ns(self, *args)

    def linear_norm(*args, **kwargs):
        shift[0] += 1000.0
        return slow_norm(*args, **kwargs)

    monkeypatch.setattr(LinearMap, "ns_error", ns_error)
    monkeypatch.setattr(LinearMap, "norm", staticmethod(linear_norm))
    summary = run(tmp_path, *DUAL, "optim.diag_every=2", "train.max_steps=6", "train.val_every=3")
    events = read_events(tmp_path / "metrics.jsonl")
    assert [e["step"] for e in events if e["event"] == "diag"] == [2, 4, 6]
    assert shift[0] >= 3 * 5 * 1000  # the patched work ran: 3 diag steps x (1 NS error + 4 linear roles)
    assert summary["train_time_ms"] < 1000 * 1000  # none of the (at least 15,000 s of) diagnostics time
    times = [e["train_time_ms"] for e in events if e["event"] in ("train", "diag", "val")]
    assert times == sorted(times) and max(times) < 1000 * 1000


def test_train_events_name_every_role_rate_the_schedule_and_the_window(tmp_path, capsys):
    run(tmp_path, *DUAL, "train.max_steps=10", "train.val_every=0", "train.warmdown_frac=0.5",
        "model.window_size=64", "model.doc_causal=true", "model.bos_token=511")
    trains = [e for e in read_events(tmp_path / "metrics.jsonl") if e["event"] == "train"]
    last = trains[-1]
    # optim=dual, manual rates: hidden matrices optim.lr, the tied table 3.2 / n_embd (64), gains 0.04
    base = {"attn_qkv": 0.05, "mlp_in": 0.05, "embed_head": 3.2 / 64, "gain": 0.04}
    factors = {e["step"]: e["lr_factor"] for e in trains}
    assert factors[1] == 1.0 and factors[10] == pytest.approx(0.2)  # linear warmdown over the last 5 steps
    for role, lr in base.items():
        assert last[f"lr/{role}"] == pytest.approx(lr * factors[10])
    assert "lr" not in last  # the old name meant the first group's rate (the embedding's for dual/muon)
    assert last["window_tokens"] == 64 and last["window_short_tokens"] == 32
    out = capsys.readouterr().out
    assert "learning rates (x the schedule's lr_factor): embed_head 0.05 |" in out
    assert "lr_factor:0.200 window:64/32" in out and "tokens/s:" in out


def test_the_run_ends_with_a_summary_line_and_keeps_its_weights(tmp_path, capsys):
    summary = run(tmp_path, "train.max_steps=6", "train.val_every=3")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith(f"final weights: {tmp_path / WEIGHTS_FILE} (")
    assert lines[-1].startswith(f"done: 6 steps | val_loss final {summary['final_val_loss']:.4f} best ")
    assert "| target 3.28 not reached | train_time " in lines[-1] and "tokens/s | peak memory " in lines[-1]
    cfg = compose_config(*SMOKE, "train.max_steps=6")
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))  # as train.py's main() does
    trained = load_trained(tmp_path)
    assert trained.step == 6 and trained.synthetic and trained.source == str(tmp_path / WEIGHTS_FILE)
    # the loaded model is the trained one: it reproduces the run's final val loss on the val shard
    batches = build_val_batches(cfg.data, 8192, 16, 128, 0, 1)
    with torch.no_grad():
        losses = [trained.model(x, y).item() for x, y in batches]
    loss = sum(losses) / len(losses)
    assert loss == pytest.approx(summary["final_val_loss"], abs=1e-5)


def test_final_weights_can_be_switched_off(tmp_path):
    run(tmp_path, "train.max_steps=2", "train.val_every=0", "checkpoint.final_weights=false")
    assert not (tmp_path / WEIGHTS_FILE).exists() and (tmp_path / "metrics.jsonl").is_file()
