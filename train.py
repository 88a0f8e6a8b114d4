"""Train a GPT on FineWeb token shards: `python train.py experiment=smoke`, or under torchrun.

Read top to bottom: config -> processes -> data -> model -> optimizer -> loop; how a run ends (outcome,
exit code) is harness/supervisor.py's. Every rank computes; rank 0 alone prints and writes. Validation loss is logged
against training wall-clock, which excludes validation and compilation.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel as DDP

from data.build import build_train_loader, build_val_batches, prepare_data
from data.config import LoaderMode
from harness.checkpoint.checkpointer import Checkpointer
from harness.config.schema import Config, ConfigError, LossReduction, Precision, register_configs
from harness.loop.epochs import EpochWatch
from harness.loop.nonfinite import NonFiniteGuard
from harness.loop.schedule import LrSchedule, extra_val_steps, val_due
from harness.loop.stages import StageSchedule
from harness.loop.tail_ema import TailEMA
from harness.process import distributed as D
from harness.process import faults  # tests' fault injection; its two call sites are in the loop below
from harness.process.cli import run_app
from harness.process.cpu_alloc import keep_freed_memory
from harness.process.cpu_threads import set_cpu_threads
from harness.process.launch import allow_submitit_pickling, nonzero_rank_overrides
from harness.process.preemption import Preempted, StopRequest
from harness.supervisor import run_hydra_job
from harness.telemetry.metrics import format_rates, learning_rates, window_fields
from harness.telemetry.tracking import make_logger  # console, metrics.jsonl, wandb (rank 0)
from inference.weights import save_final_weights
from model.gpt import GPT
from model.masks import attention_path, check_start, choose_backend
from optim import build_optimizer

register_configs()


def grad_accum_steps(cfg: Config, world: int) -> int:
    """Micro-steps per optimizer step, so the global batch does not depend on the world size. In
    data.mode=varlen (records 29-46) a micro-step is one packed row of train.seq_len tokens per rank and a
    step is data.varlen.virtual_ranks of them, whatever the world size (data/varlen.py)."""
    if cfg.data.mode is LoaderMode.varlen:
        tc, virtual = cfg.train, cfg.data.varlen.virtual_ranks
        if tc.micro_batch_seqs != 1 or tc.global_batch_tokens != virtual * tc.seq_len or virtual % world:
            raise ConfigError(
                f"data.mode=varlen packs one row of train.seq_len tokens per rank and micro-step: it needs "
                f"train.micro_batch_seqs=1 (got {tc.micro_batch_seqs}), train.global_batch_tokens = "
                f"data.varlen.virtual_ranks x train.seq_len = {virtual * tc.seq_len} (got {tc.global_batch_tokens}) "
                f"and a world size dividing {virtual} (got {world})")
        return virtual // world
    per_micro = world * cfg.train.micro_batch_seqs * cfg.train.seq_len
    if cfg.train.global_batch_tokens % per_micro:
        raise ConfigError(
            f"train.global_batch_tokens={cfg.train.global_batch_tokens} is not divisible by world size {world} "
            f"x train.micro_batch_seqs={cfg.train.micro_batch_seqs} x train.seq_len={cfg.train.seq_len} "
            f"= {per_micro} tokens per micro-step")
    return cfg.train.global_batch_tokens // per_micro


def autocast_context(cfg: Config, device: torch.device):
    precision = cfg.train.precision
    if precision is Precision.auto:
        precision = Precision.bf16 if device.type == "cuda" else Precision.fp32
    if precision is Precision.bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: torch.nn.Module, val_set, device: torch.device, autocast) -> float:
    """Mean val loss (nats/token) over the fixed val tokens, averaged over ranks."""
    model.eval()
    total, batches = torch.zeros((), device=device), 0
    for x, y, *packed in val_set:  # data.mode=varlen: + cu_seqlens
        extra = {"cu_seqlens": packed[0].to(device, non_blocking=True)} if packed else {}
        with autocast():
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if packed:  # one flat row [L] -> [1, L]
                x, y = x.view(1, -1), y.view(1, -1)
            total += model(x, y, **extra).float()
        batches += 1
    model.train()
    return D.all_reduce_mean(total / batches).item()


def train(cfg: Config, rank_info: D.RankInfo, run_dir: Path, stop: StopRequest | None = None) -> dict:
    device, tc = rank_info.device, cfg.train
    stages = StageSchedule(tc)  # records 29-46: windows, batch stages, tokens per step (harness/loop/stages.py)
    varlen = cfg.data.mode is LoaderMode.varlen  # packed rows with cu_seqlens (data/varlen.py)
    if stages.has_windows and not cfg.model.attn_windows_external:
        raise ConfigError("train.window_stages sets the attention windows each step: it needs "
                          "model.attn_windows_external=true")
    if (tc.batch_stages or tc.batch_final) and not varlen:
        raise ConfigError("train.batch_stages change the packed row length between steps: they need data.mode=varlen")
    accum = grad_accum_steps(cfg, rank_info.world_size)
    try:  # before any data or compute: a dense attention mask that cannot fit (a record's 65,536 tokens on CPU)
        with autocast_context(cfg, device)():  # the compute dtype attention will see (auto's choice, fa3)
            check_start(cfg.model, device, tc.micro_batch_seqs, stages.max_seq_len(), packed=varlen)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ckpt = Checkpointer(cfg, rank_info, run_dir)  # checks checkpoint.dir and resolves resume=... (reads only)
    stop = stop or StopRequest(False, 1, device)
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        keep_freed_memory()  # no page-fault storm from each step's big temporaries (harness/process/cpu_alloc.py)

    # Data: synthetic shards are made once per node; the val set is checked before any compute.
    if rank_info.local_rank == 0:
        prepare_data(cfg.data)
    D.barrier()
    val_set = build_val_batches(cfg.data, tc.val_tokens, tc.micro_batch_seqs, tc.seq_len, rank_info.rank, rank_info.world_size)
    make_loader = lambda: build_train_loader(cfg.data, tc.seq_len, tc.micro_batch_seqs, rank_info.rank, rank_info.world_size,
                                             tc.global_batch_tokens)
    loader = make_loader()

    # Model and optimizer: the optimizer sees raw parameters and their roles, never the wrappers.
    model = GPT(cfg.model).to(device)
    if device.type != "cpu":  # CGI gains (model.init_cgi_alpha) come from the training device's generators
        model.draw_cgi_gains(cfg.seed)
    if stages.max_seq_len() > cfg.model.block_size:  # train.seq_len, or record 46's longest batch stage
        raise ConfigError(f"train.seq_len={stages.max_seq_len()} exceeds model.block_size={cfg.model.block_size}")
    n_params = sum(p.numel() for p in model.parameters())
    with autocast_context(cfg, device)():  # model.attn_impl's backend as the forward pass resolves it
        backend, _ = choose_backend(cfg.model, device, packed=varlen)
        setup = {"attention": attention_path(cfg.model, device, packed=varlen), "attention_backend": backend.value,
                 "compile": tc.compile}  # recorded in the "run" event
    if device.type == "cpu":
        setup["cpu_threads"], setup["cpu_threads_why"] = set_cpu_threads(tc.cpu_threads, n_params)
    try:
        optimizer = build_optimizer(cfg.optim, list(model.named_parameters()), model.param_roles())
    except ValueError as e:  # a setting that does not fit this model (e.g. optim.lookahead_lr_role): one line, exit 2
        raise ConfigError(str(e)) from None
    schedule = LrSchedule(tc, optimizer.param_groups)  # train.lr_schedule: every group's lr at each step
    pre_forward = getattr(optimizer, "pre_forward", lambda: None)  # optim.lookahead's jump (optim/lookahead.py)
    # train.tail_ema: an EMA of the late weights, validated blended in as val_ema_loss (harness/loop/tail_ema.py)
    tail = TailEMA(list(model.named_parameters()), model.param_roles(), tc.tail_ema_tau, tc.tail_ema_lambda,
                   tc.tail_ema_start, tc.tail_ema_end) if tc.tail_ema else None
    extras = {"tail_ema": tail} if tail is not None else {}  # further checkpointed state
    net = torch.compile(model) if tc.compile else model
    if rank_info.world_size > 1:
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = autocast_context(cfg, device)
    guard = NonFiniteGuard(tc, ckpt.last_good)
    if rank_info.is_main:
        print(f"parameters: {n_params:,} | world {rank_info.world_size} x micro {tc.micro_batch_seqs} x seq "
              f"{tc.seq_len} x accum {accum} = {tc.global_batch_tokens:,} tokens/step | device {device} "
              f"| run dir {run_dir}", flush=True)
        print(f"attention backend: {setup['attention']} | compile: {'on' if tc.compile else 'off'} (train.compile)"
              + (f" | cpu threads: {setup['cpu_threads']} ({setup['cpu_threads_why']})" if "cpu_threads" in setup
                 else ""), flush=True)
        print(format_rates(optimizer.param_groups), flush=True)

    def set_windows(step: int, validation: bool = False) -> None:
        """train.window_stages: this step's windows; crossing into a new long window rescales the rotary
        (YaRN, model.yarn) as the records do before the step's validation and training. The last
        validation's longer window (train.window_validate_last) is set without a rescale."""
        if stages.has_windows:
            w = stages.val_windows(step) if validation else stages.windows(step)
            unit = tc.window_unit_tokens
            model.set_attention_windows(w.long * unit, w.short * unit, rescale_rotary=not validation)

    def set_batch(step: int) -> None:
        """train.batch_stages (record 46): a new stage's row length starts with the step's first micro-step."""
        rows = stages.batch(step).seq_len
        if varlen and loader.rank_tokens != rows:
            loader.set_sizes(rows, cfg.data.varlen.max_doc_len)

    # Each micro-step's loss is a mean over its tokens and DDP averages over ranks, so scaling by
    # 1/accum differentiates the step's mean loss; by global_batch_tokens/accum, its summed loss
    # (track 3: the optimizer then sees a gradient 524,288x larger, which matters against Adam's eps).
    token_scale = tc.global_batch_tokens if tc.loss_reduction is LossReduction.sum else 1

    def train_step(step: int) -> torch.Tensor:
        """One optimizer step over `accum` micro-batches; returns the mean loss (device tensor)."""
        schedule.apply(optimizer.param_groups, step)
        set_batch(step)
        pre_forward()
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            x, y, *packed = loader.next_batch()  # data.mode=varlen: a flat row [L] and its cu_seqlens
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if packed:
                x, y = x.view(1, -1), y.view(1, -1)
            # Only the last micro-step all-reduces gradients.
            no_sync = net.no_sync() if isinstance(net, DDP) and micro < accum - 1 else contextlib.nullcontext()
            with no_sync:
                with autocast():
                    if packed:  # records 29-46 differentiate each row's summed loss (DDP then averages ranks)
                        loss = net(x, y, cu_seqlens=packed[0].to(device, non_blocking=True), reduction="sum")
                    else:
                        loss = net(x, y)
                (loss * (1 if packed else token_scale) / accum).backward()
            loss_sum += loss.detach() / (x.numel() if packed else 1)
        if faults.active("nan", step):  # tests only (SPEEDRUN_FAULT): this rank's loss reads NaN
            loss_sum.fill_(float("nan"))
        if guard.skip_step(step, loss_sum):  # train.nonfinite=skip: a NaN/inf step's update is dropped on every rank
            optimizer.zero_grad(set_to_none=True)
            return loss_sum / accum
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum / accum

    # Compilation happens on untimed warm-up steps that are then undone (weights, optimizer, data).
    warmup_ms = 0.0  # their wall time (compilation + the steps themselves), reported in the summary
    if tc.compile and tc.compile_warmup_steps:
        sync(device)
        t_warmup = time.perf_counter()
        saved = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
        for first in stages.stage_starts():  # one set of steps per window/batch shape (each compiles once)
            for _ in range(tc.compile_warmup_steps):
                set_windows(first)
                train_step(first)
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        loader = make_loader()
        sync(device)
        warmup_ms = 1000 * (time.perf_counter() - t_warmup)

    start_step, train_time_ms, counters = ckpt.restore(model, optimizer, loader, extras)  # (0, 0, {}) when fresh
    log = make_logger(cfg, rank_info, run_dir, ckpt.history, setup)  # after restore: metrics.jsonl ends at the resumed step
    guard.skipped, last_val, last_ema = counters.get("skipped_steps", 0), float("nan"), float("nan")
    extra_vals = extra_val_steps(tc.val_extra_steps)
    # train.stop_after_step runs a prefix of the run: the schedule (lr, momentum, windows) stays max_steps'.
    end = tc.max_steps if tc.stop_after_step is None else tc.stop_after_step
    if start_step > end:
        raise ConfigError(f"train.stop_after_step={end} is before step {start_step}, where this run resumes: "
                          "raise it, or start a new run folder")
    has_diagnostics = getattr(optimizer, "has_diagnostics", lambda: False)  # optim.diag_every (hybrid optimizer)
    epochs = EpochWatch(loader, tc.global_batch_tokens, rank_info.is_main)  # says when the train data repeats
    sync(device)
    t0 = time.perf_counter()
    for step in range(start_step, end + 1):
        last = step == end
        model.set_train_progress(step, tc.max_steps)  # time-dependent architecture (sliding-window schedule)
        set_windows(step)  # train.window_stages (records 29-46)
        faults.at_step(step)  # tests only (SPEEDRUN_FAULT, harness/process/faults.py): SIGKILL, exit, SIGTERM, sleep
        stopping = stop.requested(step)  # SIGTERM/SIGINT on any rank: every rank stops here
        validate = last or val_due(step, tc.max_steps, tc.val_every, tc.val_tail_every, tc.val_tail_frac,
                                   tc.val_at_start, extra_vals)
        checkpoint = stopping or ckpt.due(step, last)
        if validate or checkpoint:
            if step > start_step:  # stop the clock: validation and checkpoints are not training time
                sync(device)
                train_time_ms += 1000 * (time.perf_counter() - t0)
            if checkpoint:
                path = ckpt.save(step, train_time_ms, model, optimizer, loader, {"skipped_steps": guard.skipped},
                                 extras)
                if stopping:  # main() adds how to continue
                    raise Preempted(f"stopped by {stop.reason()} after step {step}: checkpoint {path} written", step)
            if validate:
                set_windows(step, validation=True)
                last_val = evaluate(model, val_set, device, autocast)
                losses = {"val_loss": last_val}
                if tail is not None:  # the readout is the score (stop_at_val_loss, target, best)
                    last_ema = losses["val_ema_loss"] = tail.readout(lambda: evaluate(model, val_set, device, autocast),
                                                                     last_val)
                log.log({"event": "val", "step": step, "tokens": stages.tokens_before(step),
                         "train_time_ms": train_time_ms, **losses})
                guard.check(step, last_val, "validation")
                if tc.stop_at_val_loss is not None and losses.get("val_ema_loss", last_val) <= tc.stop_at_val_loss:
                    break  # time-to-target run: the target is reached, stop here
            sync(device)
            t0 = time.perf_counter()
        if last:
            break
        loss = train_step(step)
        if tail is not None:
            tail.update(step + 1)
        epochs.check(step + 1, log)
        if has_diagnostics():  # the optimizer's norms and fp64 SVDs are computed here, off the clock
            sync(device)
            train_time_ms += 1000 * (time.perf_counter() - t0)
            log.log({"event": "diag", "step": step + 1, "tokens": stages.tokens_before(step + 1),
                     "train_time_ms": train_time_ms, **optimizer.diagnostics()})
            t0 = time.perf_counter()
        if (step + 1) % tc.log_every == 0 or step + 1 == end:
            loss_value = D.all_reduce_mean(loss).item()  # .item() synchronizes the device
            now_ms = train_time_ms + 1000 * (time.perf_counter() - t0)
            log.log({"event": "train", "step": step + 1, "tokens": stages.tokens_before(step + 1),
                     "train_time_ms": now_ms, "step_avg_ms": now_ms / (step + 1),
                     "train_loss": loss_value, **learning_rates(optimizer.param_groups),
                     **window_fields(model.window_tokens())})
            guard.check(step + 1, loss_value)  # names the step, the loss and the last good checkpoint

    if cfg.checkpoint.final_weights and rank_info.is_main:  # what the run learned, for inference.sample / eval
        save_final_weights(run_dir, model, step)
    score = last_ema if tail is not None else last_val
    summary = {"final_val_loss": last_val, "steps": step, "tokens": stages.tokens_before(step),
               "stopped_at_val_loss": tc.stop_at_val_loss is not None and score <= tc.stop_at_val_loss,
               "train_time_ms": train_time_ms, "parameters": n_params, "world_size": rank_info.world_size,
               "skipped_steps": guard.skipped, "compile_warmup_ms": warmup_ms}
    if tail is not None:
        summary["final_val_ema_loss"] = last_ema
    if end < tc.max_steps and step == end:
        summary["stopped_early"] = f"train.stop_after_step={end} of max_steps={tc.max_steps}"
        if rank_info.is_main:
            print(f"stopped early after step {end} of {tc.max_steps} (train.stop_after_step): the schedule was the "
                  f"{tc.max_steps}-step run's", flush=True)
    if device.type == "cuda":
        summary["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    log.close(summary)
    return summary


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(hydra_cfg: DictConfig) -> None:
    """One run or sweep job of `train`, supervised: its ending becomes the recorded outcome and the exit code."""
    run_hydra_job(train, hydra_cfg)


if __name__ == "__main__":
    # Only rank 0 gets a Hydra output folder; the others must not create (racing) folders or logs.
    sys.argv += nonzero_rank_overrides()
    allow_submitit_pickling()  # hydra/launcher=slurm ships this script's functions to the SLURM tasks
    D.exit_process(run_app(main))  # every rank exits with its jobs' code (common/exit_codes.py)
