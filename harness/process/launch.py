"""How this process was started, read before any process group exists; and who owns the output folder.

train.py runs under three kinds of launcher:
- torchrun (or anything that sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT);
- submitit, i.e. `python train.py -m hydra/launcher=slurm ...`: SLURM starts one task per GPU and every
  task runs the Hydra job; submitit's JobEnvironment knows the task's rank and the job's hosts;
- a plain `srun python train.py ...` with several tasks (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID).
`export_torch_env()` turns the last two into torchrun's variables, so the rest of the code (and
torch.distributed's env:// rendezvous) reads a single convention.

Submitit pickles train.py's functions for its tasks: `allow_submitit_pickling()` makes the module-like
objects torch installs (torch.backends.cudnn, ...) picklable by name.

Rank 0 owns the run folder. Two mechanisms keep the other ranks from creating or writing Hydra folders:
`nonzero_rank_overrides()` for processes that parse the command line themselves (torchrun, srun), and
the `${rank0_else:A,B}` resolver for submitit tasks, which receive an already-composed config
(configs/config.yaml uses it for `hydra.output_subdir`; train.log is written by rank 0's train.py).
"""
from __future__ import annotations

import atexit
import copyreg
import importlib
import os
import shutil
import sys
import tempfile
import types
import zlib
from dataclasses import dataclass

from omegaconf import OmegaConf

TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ClusterTask:
    """One task of a SLURM (or submitit-local) job, in torch.distributed terms."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int


def cluster_task() -> ClusterTask | None:
    """The task this process is, when started by submitit or by a multi-task `srun`; else None."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit  # a dependency of hydra-submitit-launcher

        job = submitit.JobEnvironment()
    elif int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        from submitit.slurm.slurm import SlurmJobEnvironment  # parses SLURM_JOB_NODELIST

        job = SlurmJobEnvironment()
    else:
        return None
    # All tasks on one node: loopback needs no name resolution. Otherwise the job's first host.
    master = "127.0.0.1" if job.num_nodes == 1 else job.hostnames[0]
    # A port every task derives alike from the job id (crc32, not hash(): that is salted per process),
    # so array jobs sharing a node do not collide.
    port = 20000 + zlib.crc32(str(job.job_id).encode()) % 40000
    return ClusterTask(job.global_rank, job.local_rank, job.num_tasks, job.num_tasks // max(job.num_nodes, 1),
                       master, port)


def launcher_rank() -> int:
    """This process's global rank as its launcher describes it (0 when it runs alone)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    task = cluster_task()
    return task.rank if task is not None else 0


def export_torch_env() -> None:
    """Under submitit or srun, set torchrun's variables from the task; torchrun's own values win."""
    if "RANK" in os.environ:
        return
    task = cluster_task()
    if task is None:
        return
    os.environ.update(RANK=str(task.rank), WORLD_SIZE=str(task.world_size), LOCAL_RANK=str(task.local_rank),
                      LOCAL_WORLD_SIZE=str(task.local_world_size))
    os.environ.setdefault("MASTER_ADDR", task.master_addr)
    os.environ.setdefault("MASTER_PORT", str(task.master_port))


def nonzero_rank_overrides(argv: list[str] | None = None) -> list[str]:
    """Hydra overrides that keep a rank > 0 from creating folders or logs (rank 0 broadcasts its folder).

    Empty on rank 0. In multirun mode the sweep folder (with multirun.yaml and one empty folder per
    job) still gets created by Hydra, so other ranks get a private temporary one, removed at exit.
    """
    if launcher_rank() == 0:
        return []
    argv = sys.argv if argv is None else argv
    overrides = ["hydra.run.dir=.", "hydra.output_subdir=null",
                 "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    if {"-m", "--multirun"} & set(argv) or "hydra.mode=MULTIRUN" in argv:
        scratch = tempfile.mkdtemp(prefix=f"speedrun-rank{launcher_rank()}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        overrides.append(f"hydra.sweep.dir={scratch}")
    return overrides


def allow_submitit_pickling() -> None:
    """Let submitit pickle train.py's functions, which refer to module-like objects such as torch.backends.cudnn.

    Submitit (cloudpickle) pickles functions of the `__main__` script by value, together with the modules
    their code names; torch replaces several modules (torch.backends.cudnn, torch._inductor.config, ...)
    with ModuleType subclasses that pickle cannot handle. Pickling them as "import this module by name"
    is exact: the task process imports the same modules. Call it after the script's imports.
    """
    for name, module in list(sys.modules.items()):
        kind = type(module)
        if isinstance(module, types.ModuleType) and kind is not types.ModuleType and kind not in copyreg.dispatch_table:
            copyreg.pickle(kind, _module_by_name)


def _module_by_name(module: types.ModuleType) -> tuple:
    return importlib.import_module, (module.__name__,)


def _rank0_else(on_rank0: object, otherwise: object = None) -> object:
    return on_rank0 if launcher_rank() == 0 else otherwise


# Registered on import: submitit tasks unpickle train.py's main, which imports this module (through
# harness.process.distributed) before Hydra resolves the job's folder settings.
OmegaConf.register_new_resolver("rank0_else", _rank0_else, replace=True)
