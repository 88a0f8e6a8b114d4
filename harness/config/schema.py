"""Top-level configuration schema, registered with Hydra's ConfigStore.

The YAML files under configs/ are validated against these dataclasses: an unknown
key or a wrongly typed value fails at start naming the key (OmegaConf), and
`load_config` then checks ranges and cross-field rules (naming the key too).
"""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from analysis.records import ReferenceInfo
from data.config import DataConfig
from harness.config.keys import check_known_keys
from model.config import ModelConfig
from optim.registry import OPTIMIZERS, schema_store_name
from optim.roles import ALL_ROLES


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the fix."""


class Device(Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Precision(Enum):
    auto = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    fp32 = "fp32"
    bf16 = "bf16"


class LossReduction(Enum):
    mean = "mean"  # gradient of the mean token loss of the step (nanoGPT, the records)
    sum = "sum"    # gradient of the summed token loss of the step, global_batch_tokens x larger (track 3)


class LrScheduleKind(Enum):
    linear = "linear"        # warmup, constant, linear warmdown: one factor for every group
    powercool = "powercool"  # per group min(lr0, c (T - t)^p) (track-3 result #46; harness/loop/schedule.py)
    staged = "staged"        # records 29-46: flat x per-stage multipliers, linear cooldown, extension steps
                             # (harness/loop/stages.py)


@dataclass
class ValSteps:
    """Validation steps first, first + every, ..., up to and including last (train.val_extra_steps)."""
    first: int = MISSING
    last: int = MISSING
    every: int = 1


# train.powercool_c: one optional constant per parameter role (optim/roles.py), so `train.powercool_c.embed=...`
# is an ordinary key and a misspelt role fails at start.
# `module=__name__`: pickled by reference like any other schema (a SLURM/submitit task unpickles the config;
# a class pickled by value would be a second PowerCoolConstants that OmegaConf refuses as the field's type).
PowerCoolConstants = make_dataclass("PowerCoolConstants", [(r, Optional[float], None) for r in sorted(ALL_ROLES)])
PowerCoolConstants.__module__ = __name__
PowerCoolConstants.__doc__ = "PowerCool's c per param-group role (lr = min(lr0, c (T - t)^p)); null: not given."


# ---- Staged schedules (issue 25: records 29, 43, 46; harness/loop/stages.py) ------------------------------------
@dataclass
class LrStage:
    """train.lr_stages entry: where the scheduled-step progress x exceeds `after`, the staged lr's flat part is
    `mult` (record 46: 1.51 after 0.33, 1.93 after 0.66; the script's `x > 0.33`, strict)."""
    after: float = MISSING
    mult: float = MISSING


@dataclass
class BatchStage:
    """train.batch_stages entry: tokens per optimizer step (all ranks and micro-steps) and the packed sequence
    length of one micro-batch sequence, in tokens (record 46: 131,072 / 262,144 / 393,216 tokens at 8 x 16,384 /
    32,768 / 49,152)."""
    global_batch_tokens: int = MISSING
    seq_len: int = MISSING


# ---- end of the staged-schedule block ------------------------------------------------------------------------


class NonFinitePolicy(Enum):
    stop = "stop"  # raise at the first non-finite logged loss (no per-step sync)
    skip = "skip"  # check every step (one sync); drop a non-finite step's update on every rank


@dataclass
class TrainConfig:
    """Batch geometry, schedule and loop cadence. Token counts are per optimizer step / eval."""

    max_steps: int = 1000
    val_every: int = 125            # validate every N steps (and at step 0 and the end); 0 = only at the end
    val_at_start: bool = True       # validate at step 0 (track-3 result #46 does not)
    val_extra_steps: list[ValSteps] = field(default_factory=list)  # more val steps, e.g. [{first: 2600, last: 2810,
                                                                   # every: 5}] (#46's tail)
    val_tail_every: int = 0         # > 0: validate every N steps in the last val_tail_frac of the steps (track 3: 25)
    val_tail_frac: float = 0.1      # ... that is, from step (1 - val_tail_frac) * max_steps on
    val_tokens: int = 10_485_760    # fixed validation tokens, split across ranks
    global_batch_tokens: int = 524_288  # tokens per optimizer step, over all ranks and accumulation
    seq_len: int = 1024
    micro_batch_seqs: int = 64      # sequences per rank per forward/backward
    warmup_frac: float = 0.0        # fraction of max_steps with linear LR warmup from 0
    warmdown_frac: float = 0.0      # fraction of max_steps at the end with linear decay
    final_lr_frac: float = 0.0      # LR at the end of the warmdown, as a fraction of the base LR
    lr_schedule: LrScheduleKind = LrScheduleKind.linear  # powercool: the three keys below, no warmup/warmdown
    powercool_end: Optional[int] = None  # T: the rate reaches 0 at this step; null = max_steps
    powercool_power: float = 1.2    # p
    powercool_c: PowerCoolConstants = field(default_factory=PowerCoolConstants)  # c per role (powercool_c.embed=...)
    powercool_c_over_lr: Optional[float] = None  # c = this x the group's initial lr, for roles not in powercool_c
    # Tail-EMA readout (track-3 result #46; harness/loop/tail_ema.py): an fp32 EMA of the weights (all but the token
    # embedding) seeded with the weights after tail_ema_start steps, ema += (w - ema) / tau after each step until
    # tail_ema_end (exclusive); each validation also evaluates (1 - lambda) w + lambda ema as val_ema_loss, which
    # then decides stop_at_val_loss and the target crossing.
    tail_ema: bool = False
    tail_ema_tau: float = 150.0
    tail_ema_lambda: float = 0.6
    tail_ema_start: int = 2400
    tail_ema_end: int = 2900
    # ---- Staged schedules (records 29, 43, 46; harness/loop/stages.py). "Scheduled steps" S = max_steps -
    # extension_steps: the lr cooldown, the window and batch stages divide S; steps >= S are extension steps.
    # With lr_schedule=staged, warmdown_frac is the script's cooldown_frac (of S) and final_lr_frac its 0.1 floor.
    extension_steps: int = 0        # the last N steps: lr at its floor, window_final, batch_final (43, 46: 40)
    lr_progress_cap: float = 1.0    # staged lr: progress x = min(this, step / S) (record 43: 0.9999, its min())
    lr_stages: list[LrStage] = field(default_factory=list)  # staged lr: flat-part multipliers by progress (#46)
    window_stages: list[int] = field(default_factory=list)  # long window per stage, in model.window_block units
                                                             # (29-46: [3, 7, 11]); short window = long // 2
    window_stage_steps: Optional[int] = None  # the steps the window stages divide; null = S (29: max_steps + 1)
    window_unit_tokens: int = 128   # tokens per window unit (the scripts' block_size): a window of w units lets a
                                    # query see the w x 128 keys before it (FA3's window_size=(w x 128, 0))
    window_final: Optional[int] = None  # long window on steps >= S (43, 46: 13); null = the last stage's
    window_validate_last: Optional[int] = None  # long window of the validation at max_steps, YaRN not re-applied
                                                # (43, 46: 20); null = that step's window
    batch_stages: list[BatchStage] = field(default_factory=list)  # batch per stage of S (#46); empty = one batch:
                                                                   # global_batch_tokens x seq_len
    batch_final: Optional[BatchStage] = None  # the batch on steps >= S; null = the last stage's
    # ---- end of the staged-schedule fields
    grad_clip: float = 0.0          # clip the global grad norm to this; 0 = off
    loss_reduction: LossReduction = LossReduction.mean  # what the gradient differentiates; logs always show the mean
    compile: bool = False           # torch.compile the model (CUDA; the compile time is never timed)
    compile_warmup_steps: int = 3   # untimed steps run (then undone) so compilation is excluded
    cpu_threads: int = 0            # CPU: torch threads; 0 = auto (1 for a tiny model; harness/process/cpu_threads.py)
    precision: Precision = Precision.auto
    log_every: int = 1              # train-loss events every N steps
    stop_at_val_loss: Optional[float] = None  # stop at the first validation with val_loss (val_ema_loss when
                                              # tail_ema is on) <= this (time-to-target)
    stop_after_step: Optional[int] = None  # run only steps 1..N of the unchanged max_steps schedule (a prefix of
                                           # the run), validate at N and exit 0; null = run to max_steps
    target_val_loss: float = 3.28   # the speedrun's target; summaries record when val loss first reaches it
    nonfinite: NonFinitePolicy = NonFinitePolicy.stop
    max_nonfinite_skips: int = 10   # with nonfinite=skip: stop once this many steps were skipped

    def check(self) -> None:
        for key in ("max_steps", "val_tokens", "global_batch_tokens", "seq_len", "micro_batch_seqs", "log_every",
                    "max_nonfinite_skips"):
            if getattr(self, key) <= 0:
                raise ValueError(f"train.{key} must be > 0 (got {getattr(self, key)})")
        for key in ("val_every", "val_tail_every", "compile_warmup_steps", "cpu_threads"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be >= 0 (got {getattr(self, key)})")
        for key in ("warmup_frac", "warmdown_frac", "final_lr_frac", "val_tail_frac"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"train.{key} must lie in [0, 1] (got {getattr(self, key)})")
        if self.warmup_frac + self.warmdown_frac > 1.0:
            raise ValueError(f"train.warmup_frac + train.warmdown_frac must be <= 1 "
                             f"(got {self.warmup_frac} + {self.warmdown_frac})")
        if self.stop_at_val_loss is not None and not self.stop_at_val_loss > 0:
            raise ValueError(f"train.stop_at_val_loss must be > 0 or null (got {self.stop_at_val_loss})")
        if self.stop_after_step is not None and not 0 <= self.stop_after_step <= self.max_steps:
            raise ValueError(f"train.stop_after_step must lie in [0, train.max_steps={self.max_steps}] or be null "
                             f"(got {self.stop_after_step})")
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip must be >= 0 (got {self.grad_clip})")
        if not self.target_val_loss > 0:
            raise ValueError(f"train.target_val_loss must be > 0 (got {self.target_val_loss})")
        self._check_schedule()
        self._check_tail_ema()
        self._check_stages()
        for i, r in enumerate(self.val_extra_steps):
            if not (0 <= r.first <= r.last and r.every >= 1):
                raise ValueError(f"train.val_extra_steps[{i}] must have 0 <= first <= last and every >= 1 "
                                 f"(got first={r.first}, last={r.last}, every={r.every})")

    def _check_schedule(self) -> None:
        if self.lr_schedule is LrScheduleKind.powercool:
            for key in ("warmup_frac", "warmdown_frac"):
                if getattr(self, key):
                    raise ValueError(f"train.{key}={getattr(self, key)} belongs to train.lr_schedule=linear: set it "
                                     "to 0 with powercool (its cooldown is powercool_end/power/c)")
        if self.powercool_end is not None and self.powercool_end <= 0:
            raise ValueError(f"train.powercool_end must be > 0 or null (got {self.powercool_end})")
        if not self.powercool_power > 0:
            raise ValueError(f"train.powercool_power must be > 0 (got {self.powercool_power})")
        for role, c in vars(self.powercool_c).items():
            if c is not None and not c >= 0:
                raise ValueError(f"train.powercool_c.{role} must be >= 0 (got {c})")
        if self.powercool_c_over_lr is not None and not self.powercool_c_over_lr >= 0:
            raise ValueError(f"train.powercool_c_over_lr must be >= 0 or null (got {self.powercool_c_over_lr})")

    def _check_tail_ema(self) -> None:
        if not self.tail_ema_tau >= 1:
            raise ValueError(f"train.tail_ema_tau must be >= 1 step (got {self.tail_ema_tau})")
        if not 0.0 <= self.tail_ema_lambda <= 1.0:
            raise ValueError(f"train.tail_ema_lambda must lie in [0, 1] (got {self.tail_ema_lambda})")
        if self.tail_ema and not 1 <= self.tail_ema_start < self.tail_ema_end:
            raise ValueError(f"train.tail_ema_start must be >= 1 and < train.tail_ema_end (got "
                             f"{self.tail_ema_start}, {self.tail_ema_end})")

    def _check_stages(self) -> None:
        """train.extension_steps .. train.step_every (the staged-schedule block)."""
        staged = self.lr_schedule is LrScheduleKind.staged
        if staged and self.warmup_frac:
            raise ValueError(f"train.warmup_frac={self.warmup_frac} belongs to train.lr_schedule=linear: the staged "
                             "schedule has no warmup (set it to 0)")
        if not 0 <= self.extension_steps < self.max_steps:
            raise ValueError(f"train.extension_steps must lie in [0, train.max_steps={self.max_steps}) "
                             f"(got {self.extension_steps})")
        if self.extension_steps and not staged:
            raise ValueError(f"train.extension_steps={self.extension_steps} needs train.lr_schedule=staged "
                             "(the other schedules end at max_steps)")
        if not 0.0 < self.lr_progress_cap <= 1.0:
            raise ValueError(f"train.lr_progress_cap must lie in (0, 1] (got {self.lr_progress_cap})")
        if self.lr_stages and not staged:
            raise ValueError("train.lr_stages needs train.lr_schedule=staged")
        for i, st in enumerate(self.lr_stages):
            if not (0.0 <= st.after < 1.0 and st.mult > 0):
                raise ValueError(f"train.lr_stages[{i}] must have 0 <= after < 1 and mult > 0 "
                                 f"(got after={st.after}, mult={st.mult})")
            if i and not st.after > self.lr_stages[i - 1].after:
                raise ValueError(f"train.lr_stages[{i}].after={st.after} must exceed the previous stage's "
                                 f"({self.lr_stages[i - 1].after})")
        if self.window_unit_tokens < 1:
            raise ValueError(f"train.window_unit_tokens must be >= 1 (got {self.window_unit_tokens})")
        for i, w in enumerate(self.window_stages):
            if w < 1:
                raise ValueError(f"train.window_stages[{i}] must be >= 1 window block (got {w})")
        for key in ("window_stage_steps", "window_final", "window_validate_last"):
            value = getattr(self, key)
            if value is not None and not self.window_stages:
                raise ValueError(f"train.{key} needs train.window_stages")
            if value is not None and value < 1:
                raise ValueError(f"train.{key} must be >= 1 or null (got {value})")
        stages = [(f"train.batch_stages[{i}]", b) for i, b in enumerate(self.batch_stages)]
        if self.batch_final is not None:
            if not self.batch_stages:
                raise ValueError("train.batch_final needs train.batch_stages")
            stages.append(("train.batch_final", self.batch_final))
        for key, b in stages:
            if b.global_batch_tokens <= 0 or b.seq_len <= 0 or b.global_batch_tokens % b.seq_len:
                raise ValueError(f"{key} must have global_batch_tokens a positive multiple of seq_len > 0 "
                                 f"(got {b.global_batch_tokens}, {b.seq_len})")
            first = stages[0][1]
            if b.global_batch_tokens // b.seq_len != first.global_batch_tokens // first.seq_len:
                raise ValueError(f"{key} has {b.global_batch_tokens // b.seq_len} sequences per step, "
                                 f"{stages[0][0]} {first.global_batch_tokens // first.seq_len}: stages change the "
                                 "sequence length, not the count (the accumulation stays fixed, as in record 46)")


@dataclass
class CheckpointConfig:
    """Checkpoints of the whole training state (see harness/checkpoint/checkpointer.py).

    A checkpoint is also written when the run is told to stop (SIGTERM/SIGINT), whatever `every` says.
    """

    every: int = 0           # write one every N optimizer steps; 0 = only on a stop signal (and `final`)
    keep: int = 2            # keep the newest K checkpoints; 0 = keep all
    dir: str = ""            # "" = <run dir>/checkpoints
    final: bool = False      # also write one after the last step (the whole training state)
    final_weights: bool = True  # write the trained weights alone to <run dir>/final_weights.pt (inference/weights.py)
    on_signal: bool = True   # SIGTERM/SIGINT: finish the step, write a checkpoint, exit 0
    stop_check_every: int = 1  # agree across ranks on a stop signal every N steps (one tiny all-reduce)

    def check(self) -> None:
        for key in ("every", "keep"):
            if getattr(self, key) < 0:
                raise ValueError(f"checkpoint.{key} must be >= 0 (got {getattr(self, key)})")
        if self.stop_check_every <= 0:
            raise ValueError(f"checkpoint.stop_check_every must be > 0 (got {self.stop_check_every})")


@dataclass
class LoggerConfig:
    """Where metrics go besides the console and metrics.jsonl (`none`: nowhere else)."""

    name: str = "none"

    def check(self) -> None:
        pass


class WandbMode(Enum):
    online = "online"      # stream to the wandb server (needs `wandb login` and network)
    offline = "offline"    # write <run folder>/wandb/offline-run-*; upload later with `wandb sync`
    disabled = "disabled"  # no wandb at all (same as logger=none)


@dataclass
class WandbLoggerConfig(LoggerConfig):
    """Weights & Biases run tracking (harness/telemetry/wandb_sink.py); rank 0 only, never fatal to training."""

    name: str = "wandb"
    project: str = "nanogpt-speedrun"
    entity: Optional[str] = None    # team or user; None = the logged-in user's default entity
    mode: WandbMode = WandbMode.online
    group: Optional[str] = None     # None = the experiment name, or <experiment>-<sweep folder> under -m
    tags: list[str] = field(default_factory=list)
    run_name: Optional[str] = None  # None = the sweep job's overrides (e.g. optim.lr=0.003,seed=1)
    dir: Optional[str] = None       # where wandb keeps its files; None = the run folder
    init_timeout: float = 30.0      # seconds wandb.init may take before training goes on without it

    def check(self) -> None:
        if not self.project:
            raise ValueError("logger.project must not be empty")
        if not self.init_timeout > 0:
            raise ValueError(f"logger.init_timeout must be > 0 seconds (got {self.init_timeout})")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: Any = MISSING   # one of optim.registry.OPTIMIZERS' schemas, chosen by the `optim` group
    data: DataConfig = field(default_factory=DataConfig)
    logger: Any = MISSING  # one of LOGGER_SCHEMAS, chosen by the `logger` group
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    device: Device = Device.auto
    experiment: Optional[str] = None  # name of the experiment file, for grouping runs
    reference: Optional[ReferenceInfo] = None  # the published result the experiment reproduces (its file's block)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: str = "auto"        # auto: newest checkpoint of this run folder, if any | none | PATH
    resume_force: bool = False  # load a checkpoint whose model/optim config differs (or start over with resume=none)


LOGGER_SCHEMAS: dict[str, type] = {"none_schema": LoggerConfig, "wandb_schema": WandbLoggerConfig}


def register_configs() -> None:
    """Register the schemas so configs/*.yaml are type-checked against them. (hydra.run.dir's resolver,
    `run_dir`, is registered where it is defined: harness/checkpoint/run_dir.py, imported by train.py.)"""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    # Stored outside the groups, so that --help and "not found" errors list only the real options;
    # a group's YAML extends its schema with `- /<group>_<name>@_here_` (e.g. /optim_adamw_schema@_here_).
    for name, entry in OPTIMIZERS.items():  # the optimizer registry (optim/registry.py)
        cs.store(name=schema_store_name(name), node=entry.schema)
    for name, schema in LOGGER_SCHEMAS.items():
        cs.store(name=f"logger_{name}", node=schema)


def load_config(cfg: DictConfig) -> Config:
    """Typed, range-checked config object from Hydra's composed DictConfig."""
    try:
        check_known_keys(cfg)  # `+key=value` adds keys the schemas do not have (harness/config/keys.py)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    obj: Config = OmegaConf.to_object(cfg)
    try:
        for part in (obj.model, obj.optim, obj.data, obj.train, obj.logger, obj.checkpoint, obj.reference):
            if part is not None:
                part.check()
        if not obj.resume:
            raise ValueError("resume must be auto, none or a checkpoint path (got an empty string)")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return obj
