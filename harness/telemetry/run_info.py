"""What a run was: code version, hardware, launch. Recorded once per run (metrics.jsonl, wandb config).

Every field is best effort: a missing git, a tarball checkout or an odd driver gives None, never an error.
"""
from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
from pathlib import Path

import torch

from common.paths import REPO


def git_state(repo: Path = REPO) -> dict:
    """{"git_commit": sha or None, "git_dirty": True when tracked files differ from the commit}."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def hardware(device: torch.device, world_size: int) -> dict:
    """Accelerator (GPU name and count per node) or CPU model, and the process layout."""
    info: dict = {"device": device.type, "world_size": world_size,
                  "nodes": max(world_size // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)), 1)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpus_per_node"] = torch.cuda.device_count()
    else:
        info["cpu"] = _cpu_model()
        info["cpu_count"] = os.cpu_count()
        info["torch_threads"] = torch.get_num_threads()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_info(device: torch.device, world_size: int, overrides: list[str] | None = None) -> dict:
    """Everything above plus software versions, host and the Hydra command-line overrides."""
    return {**git_state(), "hardware": hardware(device, world_size), "world_size": world_size,
            "host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
            "overrides": overrides or []}


def peak_host_memory_mib() -> float:
    """Peak resident memory of this process (rank 0), in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
