"""Process-group setup for torchrun (RANK / WORLD_SIZE / LOCAL_RANK), SLURM/submitit tasks, or a plain `python` run."""
from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from harness.config.schema import ConfigError, Device
from harness.process.launch import export_torch_env

_GROUPS = itertools.count()  # process groups this process has made (one per sweep job)
_joined: list[str] = []       # their backends: exit_process() must not finalize after any of them


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job (torch.distributed itself is `dist` everywhere)."""
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(choice: Device, local_rank: int) -> torch.device:
    if choice is Device.cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if choice is Device.cuda:
            raise ConfigError("device=cuda but no CUDA device is visible to torch; use device=cpu "
                              "(or device=auto), or check CUDA_VISIBLE_DEVICES and the driver")
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                          "lower --nproc_per_node")
    return torch.device("cuda", local_rank)


def init_distributed(choice: Device) -> RankInfo:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), or run alone."""
    export_torch_env()  # SLURM / submitit tasks: their rank and rendezvous, in torchrun's variables
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend, timeout = ("nccl" if device.type == "cuda" else "gloo"), timedelta(minutes=30)
        # The env:// store outlives a process group under torchrun, and a sweep (`-m`) makes one group
        # per job in the same processes: a fresh key prefix per group keeps a rank from reading the
        # previous job's rendezvous keys (which hangs when it connects to a peer's stale address).
        # torchrun also keeps that store across elastic restarts, whose new processes count groups
        # from 0 again: the restart count makes their keys fresh too.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
        dist.init_process_group(backend, store=dist.PrefixStore(f"speedrun_a{attempt}_pg{next(_GROUPS)}", store),
                                rank=rank, world_size=world, timeout=timeout,
                                device_id=device if device.type == "cuda" else None)
        _joined.append(backend)
    return RankInfo(rank, local_rank, world, device)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (SUM then divide: gloo has no AVG)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def broadcast_object(obj: object) -> object:
    """Rank 0's value of `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End this process with `code`; once a process group has run, without finalizing the interpreter.

    DDP keeps its process group alive after destroy_process_group (a reference held inside torch), so
    gloo's worker threads outlive main(). Such a worker drops its reference to a collective's tensors
    just after the collective returns; on a loaded machine that can happen only once the interpreter
    is finalizing, when a thread that takes the GIL is ended by pthread_exit from a noexcept frame:
    `terminate called without an active exception`, SIGABRT, a finished run reported failed. So the
    exit handlers (atexit: wandb, Hydra, scratch folders) and the streams run and flush now, while the
    interpreter is whole, and os._exit ends the process with every native thread in it.
    """
    if not _joined:  # this process never joined a group: the ordinary exit
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
