"""Run tracking without training: summaries, the console status line, the wandb sink (with a fake wandb),
launcher environments (torchrun / submitit / srun), config validation."""
import io
import os
import pickle
import shutil

import pytest
import torch

from analysis.runs import read_events
from harness.config.schema import ConfigError, WandbLoggerConfig, WandbMode
from harness.process import launch
from harness.telemetry.metrics import (
    ConsoleSink,
    JsonlSink,
    MetricsLogger,
    ValTracker,
    format_diag,
    format_event,
    format_summary,
    learning_rates,
    window_fields,
)
from harness.telemetry.wandb_sink import WandbSink

VAL = [{"event": "val", "step": s, "tokens": s * 100, "train_time_ms": s * 10.0, "val_loss": v}
       for s, v in [(0, 6.0), (10, 4.0), (20, 3.2), (30, 3.1), (40, 3.3)]]
TRAIN = {"event": "train", "step": 10, "tokens": 1000, "train_time_ms": 100.0, "step_avg_ms": 10.0,
         "train_loss": 4.5, "lr/attn_out": 0.05, "lr/embed": 0.6, "lr_factor": 1.0}
DIAG = {"event": "diag", "step": 10, "tokens": 1000, "train_time_ms": 100.0, "ns_error": 0.031, "momentum": 0.9,
        "update_norm/attn_out": 0.05, "update_rms/gain": 0.01}
SUMMARY = {"steps": 40, "final_val_loss": 3.3, "best_val_loss": 3.1, "target_val_loss": 3.28,
           "target_val_loss_step": 20, "target_val_loss_train_time_ms": 200.0, "train_time_ms": 400.0,
           "tokens_per_s": 10_000.0, "peak_host_memory_mib": 512.4}


def test_summary_records_when_the_target_was_first_reached(tmp_path):
    log = MetricsLogger([JsonlSink(tmp_path / "m.jsonl")], target_val_loss=3.28)
    for e in VAL:
        log.log(e)
    log.close({"final_val_loss": 3.3, "tokens": 4000, "train_time_ms": 400.0})
    summary = read_events(tmp_path / "m.jsonl")[-1]
    assert summary["event"] == "summary"
    assert summary["target_val_loss_step"] == 20 and summary["target_val_loss_train_time_ms"] == 200.0
    assert summary["target_val_loss_tokens"] == 2000 and summary["best_val_loss"] == 3.1
    assert summary["tokens_per_s"] == pytest.approx(10_000) and summary["peak_host_memory_mib"] > 0


def test_target_never_reached_is_null():
    tracker = ValTracker(3.0)
    for e in VAL:
        tracker.update(e)
    assert tracker.summary()["target_val_loss_step"] is None and tracker.summary()["best_val_loss"] == 3.1


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_console_without_tty_prints_the_speedrun_lines_with_throughput_and_a_summary():
    out = io.StringIO()
    sink = ConsoleSink(100, out)
    for e in (VAL[0], TRAIN, DIAG, VAL[1]):
        sink.log(e)
    sink.close(SUMMARY)
    assert out.getvalue().splitlines() == [format_event(VAL[0], 100), format_event(TRAIN, 100),
                                           format_diag(DIAG, 100), format_event(VAL[1], 100), format_summary(SUMMARY)]
    assert "\r" not in out.getvalue() and "ETA" not in out.getvalue()
    assert format_event(TRAIN, 100) == ("step:10/100 train_loss:4.5000 lr_factor:1.000 train_time:100ms "
                                        "step_avg:10.00ms tokens/s:10.0k")


def test_summary_line_states_the_result_time_throughput_and_memory():
    assert format_summary(SUMMARY) == ("done: 40 steps | val_loss final 3.3000 best 3.1000 | target 3.28 reached at "
                                       "step 20 (0.2s) | train_time 0.4s | 10.0k tokens/s | peak memory 512 MiB host")
    unfinished = format_summary({"steps": 3, "final_val_loss": float("nan"), "target_val_loss": 3.28,
                                 "train_time_ms": 0.0, "peak_memory_mib": 2048.0, "skipped_steps": 2})
    assert unfinished == ("done: 3 steps | val_loss final n/a best n/a | target 3.28 not reached | train_time 0.0s "
                          "| peak memory 2048 MiB GPU | 2 non-finite steps skipped")


def test_diag_line_is_compact_and_summarizes_long_groups():
    line = format_diag(DIAG, 100)
    assert line == "step:10/100 diag ns_error:0.031 momentum:0.9 | update_norm attn_out:0.05 | update_rms gain:0.01"
    many = {**DIAG, **{f"lanton_lr/layer{i}": 0.01 * (i + 1) for i in range(12)}}
    assert format_diag(many, 100).endswith("| lanton_lr 12 values in [0.01, 0.12]")


def test_learning_rates_name_every_group_and_the_common_factor():
    groups = [{"role": "embed", "lr": 0.3, "initial_lr": 0.6}, {"role": "attn_out", "lr": 0.025, "initial_lr": 0.05},
              {"role": "attn_out", "lr": 0.01, "initial_lr": 0.02}]
    assert learning_rates(groups) == {"lr/embed": 0.3, "lr/attn_out": 0.025, "lr/attn_out#2": 0.01, "lr_factor": 0.5}
    groups[0]["lr"] = 0.6  # per-group schedules: no single factor to report, the rates say it all
    assert "lr_factor" not in learning_rates(groups) and learning_rates([{"lr": 1e-3}]) == {"lr/0": 1e-3}
    assert window_fields((0, 0)) == {} and window_fields((1792, 896)) == {"window_tokens": 1792,
                                                                           "window_short_tokens": 896}


def test_console_on_a_tty_redraws_a_status_line():
    out = FakeTTY()
    sink = ConsoleSink(100, out)
    sink.log(VAL[0])
    sink.log(TRAIN)
    sink.log({**TRAIN, "step": 20, "tokens": 2000, "train_time_ms": 200.0})
    shown = out.getvalue()
    assert "step:0/100 val_loss:6.0000" in shown and "step:20/100 train_loss:4.5000" in shown
    status = shown.rsplit("\n", 1)[-1]  # the line left on screen, not terminated by a newline
    assert status.startswith("[ 20/100  20%] loss 4.5000 | 10.0k tok/s | ETA ") and "\r" in shown
    sink.close(SUMMARY)
    assert out.getvalue().endswith(ConsoleSink.CLEAR + format_summary(SUMMARY) + "\n")


class FakeRun:
    def __init__(self, fail_log=False):
        self.metrics, self.rows, self.summary, self.finished, self.fail_log = {}, [], {}, False, fail_log

    def define_metric(self, name, step_metric=None, summary=None):
        self.metrics[name] = step_metric

    def log(self, row, step):
        if self.fail_log:
            raise ConnectionError("network is down\nsecond line")
        self.rows.append((step, row))

    def finish(self):
        self.finished = True


class FakeWandb:
    def __init__(self, run=None, error=None):
        self.run, self.error, self.init_kwargs = run, error, None

    def Settings(self, **kwargs):  # noqa: N802 (wandb's name)
        return kwargs

    def init(self, **kwargs):
        self.init_kwargs = kwargs
        if self.error:
            raise self.error
        return self.run


def test_wandb_sink_charts_val_loss_against_time_and_tokens(tmp_path):
    fake = FakeWandb(FakeRun())
    cfg = WandbLoggerConfig(mode=WandbMode.offline, tags=["a"], init_timeout=5)
    sink = WandbSink(cfg, {"seed": 1}, tmp_path, group="g", name="n", wandb_module=fake)
    assert fake.init_kwargs["mode"] == "offline" and fake.init_kwargs["dir"] == str(tmp_path)
    assert fake.init_kwargs["group"] == "g" and fake.init_kwargs["settings"] == {"init_timeout": 5}
    assert fake.run.metrics["val/loss"] == "train_time_ms" and fake.run.metrics["val_vs_tokens/loss"] == "tokens"
    sink.log(VAL[2])
    sink.log(TRAIN)
    sink.log({**DIAG, "step": 20})
    sink.log({"event": "run", "git_commit": "x"})  # not a metric row
    assert [s for s, _ in fake.run.rows] == [20, 10, 20]
    assert fake.run.rows[0][1] == {"train_time_ms": 200.0, "tokens": 2000, "val/loss": 3.2, "val_vs_tokens/loss": 3.2}
    assert fake.run.rows[1][1] == {"train_time_ms": 100.0, "tokens": 1000, "train/loss": 4.5, "train/step_avg_ms": 10.0,
                                   "lr/attn_out": 0.05, "lr/embed": 0.6, "lr/factor": 1.0,
                                   "train/tokens_per_s": pytest.approx(10_000)}
    assert fake.run.rows[2][1] == {"train_time_ms": 100.0, "tokens": 1000, "diag/ns_error": 0.031,
                                   "diag/momentum": 0.9, "diag/update_norm/attn_out": 0.05,
                                   "diag/update_rms/gain": 0.01}
    sink.close({"final_val_loss": 3.2, "target_val_loss_step": None})
    assert fake.run.summary == {"final_val_loss": 3.2} and fake.run.finished


def test_wandb_start_failure_warns_once_and_goes_on(tmp_path, capsys):
    error = RuntimeError("api_key not configured\nrun `wandb login`")
    sink = WandbSink(WandbLoggerConfig(), {}, tmp_path, wandb_module=FakeWandb(error=error))
    for e in VAL:
        sink.log(e)
    sink.close({"final_val_loss": 3.3})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: wandb could not start (RuntimeError: api_key")
    assert str(tmp_path / "metrics.jsonl") in lines[0] and "logger.mode=offline" in lines[0]


def test_wandb_failure_mid_run_warns_once(tmp_path, capsys):
    fake = FakeWandb(FakeRun(fail_log=True))
    sink = WandbSink(WandbLoggerConfig(), {}, tmp_path, wandb_module=fake)
    for e in VAL:
        sink.log(e)
    sink.close({})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "stopped logging (ConnectionError: network is down second line)" in lines[0]
    assert not fake.run.finished


def test_wandb_config_is_checked():
    with pytest.raises(ValueError, match="logger.init_timeout"):
        WandbLoggerConfig(init_timeout=0).check()
    with pytest.raises(ValueError, match="logger.project"):
        WandbLoggerConfig(project="").check()


SLURM_TASK = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5",
              "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2",
              "SLURM_JOB_NODELIST": "gpu[07-08]"}


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables; and whatever export_torch_env() sets is removed afterwards (later tests
    start train.py subprocesses that would otherwise believe they are rank 5 of 8)."""
    saved = dict(os.environ)
    for key in [*launch.TORCH_VARS, "SUBMITIT_EXECUTOR", *SLURM_TASK]:
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("executor", ["srun", "submitit"])
def test_slurm_task_becomes_torchrun_variables(clean_env, executor):
    for key, value in SLURM_TASK.items():
        clean_env.setenv(key, value)
    if executor == "submitit":
        clean_env.setenv("SUBMITIT_EXECUTOR", "slurm")
        clean_env.delenv("SLURM_STEP_NUM_TASKS")
    task = launch.cluster_task()
    assert (task.rank, task.local_rank, task.world_size, task.local_world_size) == (5, 1, 8, 4)
    assert task.master_addr == "gpu07" and 20000 <= task.master_port < 60000
    launch.export_torch_env()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")] == ["5", "8", "1", "gpu07"]
    assert launch.launcher_rank() == 5


def test_torchrun_variables_win_and_a_lone_process_is_rank_0(clean_env):
    assert launch.cluster_task() is None and launch.launcher_rank() == 0
    assert launch.nonzero_rank_overrides(["train.py", "-m"]) == []
    clean_env.setenv("SLURM_PROCID", "0")  # inside an sbatch script, not an srun step: still alone
    assert launch.cluster_task() is None
    for key, value in SLURM_TASK.items():
        clean_env.setenv(key, value)
    clean_env.setenv("RANK", "3")
    launch.export_torch_env()
    assert os.environ["RANK"] == "3" and "MASTER_ADDR" not in os.environ


def test_nonzero_ranks_get_no_hydra_folders(clean_env):
    clean_env.setenv("RANK", "1")
    run = launch.nonzero_rank_overrides(["train.py", "experiment=smoke"])
    assert "hydra.run.dir=." in run and "hydra.output_subdir=null" in run
    assert not any(o.startswith("hydra.sweep.dir") for o in run)
    sweep = launch.nonzero_rank_overrides(["train.py", "-m", "seed=0,1"])
    scratch = [o.split("=", 1)[1] for o in sweep if o.startswith("hydra.sweep.dir=")]
    assert len(scratch) == 1 and "speedrun-rank1-" in scratch[0] and os.path.isdir(scratch[0])
    shutil.rmtree(scratch[0])
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"a": "${rank0_else:.hydra,null}"})
    assert cfg.a is None
    clean_env.setenv("RANK", "0")
    assert cfg.a == ".hydra"


def test_torch_module_objects_pickle_by_name():
    import cloudpickle

    launch.allow_submitit_pickling()
    assert pickle.loads(cloudpickle.dumps(torch.backends.cudnn)) is torch.backends.cudnn


def test_logger_group_validates_keys():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from harness.config.schema import load_config, register_configs
    from tests.conftest import REPO

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = load_config(compose("config", overrides=["experiment=smoke", "logger=wandb", "logger.mode=offline"]))
        assert cfg.logger.mode is WandbMode.offline and cfg.logger.project == "nanogpt-speedrun"
        with pytest.raises(ConfigCompositionException, match="projct"):
            compose("config", overrides=["logger=wandb", "logger.projct=x"])
        with pytest.raises(ConfigError, match="logger.init_timeout must be > 0"):
            load_config(compose("config", overrides=["experiment=smoke", "logger=wandb", "logger.init_timeout=0"]))
        with pytest.raises(ConfigError, match="train.target_val_loss must be > 0"):
            load_config(compose("config", overrides=["experiment=smoke", "train.target_val_loss=0"]))
