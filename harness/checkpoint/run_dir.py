"""Which folder a run writes to, so that the same command continues an interrupted run.

`hydra.run.dir` defaults to `${run_dir:outputs/runs}` (configs/config.yaml), resolved once, on rank 0,
before Hydra creates the folder:
1. under torchrun, `outputs/runs/torchrun-<rdzv id>` when it exists: an elastic restart (same job id)
   finds the checkpoints of the attempt that died;
2. with resume=auto (the default), the newest folder under `outputs/runs` whose config.yaml equals
   this run's config, that has a complete checkpoint, did not finish (its outcome.json says so or is
   missing: killed) and is not in use by a live process: a rerun of the same command after a crash,
   kill -9, preemption, full disk or requeue continues there;
3. otherwise a new folder: `torchrun-<rdzv id>` under torchrun, else the time to the microsecond.
A finished run is never continued this way: the same command after it starts a new run, and
train.py refuses to retrain a finished run when pointed at its folder with resume=auto.

A live run holds an exclusive lock on `<run folder>/.lock` (released by the OS when it dies, also by
kill -9), so two processes never write the same folder.
"""
from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from harness.checkpoint.store import latest
from harness.process import outcome

CONFIG = "config.yaml"
LOCK = ".lock"
_found: dict[str, dict | None] = {}  # run folder continued by the resolver -> its outcome (for train.py's line)


class RunDirError(ValueError):
    """The run folder cannot be used (another live run writes it, or it cannot be created)."""


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # ~0.2 ms a config.yaml: a search may read hundreds


def task_config(root: DictConfig) -> dict:
    """The run's resolved config without the `hydra` node, as config.yaml stores it (plain containers)."""
    task = OmegaConf.masked_copy(root, [k for k in root.keys() if k != "hydra"])
    return yaml.load(OmegaConf.to_yaml(task, resolve=True), Loader=_Loader)


def saved_config(run_dir: Path) -> dict | None:
    try:
        return yaml.load((Path(run_dir) / CONFIG).read_text(encoding="utf-8"), Loader=_Loader)
    except Exception:  # noqa: BLE001 - missing, unreadable or not YAML: not a run of this config
        return None


def checkpoint_root(run_dir: Path, config: dict) -> Path:
    configured = (config.get("checkpoint") or {}).get("dir") or ""
    return Path(configured).expanduser() if configured else Path(run_dir) / "checkpoints"


def find_unfinished(runs_root: Path, config: dict) -> Path | None:
    """The newest unfinished, resumable, idle run folder under runs_root with exactly this config."""
    if not runs_root.is_dir():
        return None
    candidates = []
    for folder in runs_root.iterdir():
        done = outcome.read(folder)
        if not folder.is_dir() or (done is not None and done["status"] == "finished"):
            continue
        newest = latest(checkpoint_root(folder, config))
        if newest is not None and saved_config(folder) == config and not in_use(folder):
            candidates.append((newest.stat().st_mtime, folder))
    return max(candidates)[1] if candidates else None


def resolve_run_dir(runs_root: str, *, _root_: DictConfig) -> str:
    """OmegaConf resolver `${run_dir:ROOT}`: the run folder for this config (see the module docstring)."""
    root = Path(runs_root)
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    elastic = root / f"torchrun-{run_id}" if run_id and run_id != "none" else None  # "none": no --rdzv-id
    if elastic is not None and elastic.is_dir():
        return str(elastic)
    if _root_.get("resume") == "auto":
        found = find_unfinished(root, task_config(_root_))
        if found is not None:
            _found[str(found.resolve())] = outcome.read(found)
            return str(found)
    return str(elastic or root / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f"))


# hydra.run.dir's default (configs/config.yaml: ${run_dir:outputs/runs}): a new run, or the one to continue.
# Registered on import, as rank0_else (harness/process/launch.py): train.py imports this module (through
# harness.supervisor) before Hydra resolves the job's folder, in SLURM tasks too.
if not OmegaConf.has_resolver("run_dir"):
    OmegaConf.register_new_resolver("run_dir", resolve_run_dir)


def continued(run_dir: Path) -> tuple[bool, dict | None]:
    """(whether the resolver chose run_dir as an unfinished run to continue, that run's outcome)."""
    key = str(Path(run_dir).resolve())
    return key in _found, _found.get(key)


def finished_before(run_dir: Path, config: dict) -> dict | None:
    """The outcome of a run that already finished in run_dir with exactly this config, else None."""
    done = outcome.read(run_dir)
    if done is None or done["status"] != "finished" or saved_config(run_dir) != config:
        return None
    return done


def _ended(previous: dict | None) -> str:
    if previous is None:
        return "was killed, or crashed before it could say why"
    step = f" at step {previous['step']}" if previous.get("step") is not None else ""
    return f"ended {previous['status']}{step}: {previous['message']}" if previous["status"] != "stopped" \
        else f"was stopped{step}"


def claim(run_dir: Path, task_cfg: DictConfig, lock: "RunLock") -> tuple[str | None, str | None]:
    """Rank 0, before the run writes anything: lock run_dir and look at what it holds.

    Returns (error line, None) when the folder is unusable; (None, line) when it holds this config's
    finished run and resume=auto (nothing to do); else (None, None), after saying which unfinished
    run the resolver chose to continue.
    """
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except RuntimeError as e:
        return str(e), None
    except OSError as e:
        return f"cannot use run folder {run_dir}: {e.strerror or e}; choose a writable hydra.run.dir", None
    if task_cfg.get("resume") == "auto" and (done := finished_before(run_dir, task_config(task_cfg))) is not None:
        return None, (f"run {run_dir} already {done['message']}: nothing to do; to train it again from "
                      "scratch add resume=none resume_force=true, or give it another folder (hydra.run.dir=...)")
    picked, previous = continued(run_dir)
    if picked:
        newest = latest(checkpoint_root(run_dir, task_config(task_cfg)))
        print(f"resume=auto: continuing the unfinished run {run_dir} (same config; it {_ended(previous)}; newest "
              f"checkpoint {newest.name if newest else 'none'}); resume=none starts a new one", flush=True)
    outcome.clear(run_dir)  # this attempt has no outcome until it ends: a kill -9 must not leave the last one's
    return None, None


class RunLock:
    """Exclusive lock on a run folder for the life of this process (flock: released when it dies)."""

    def __init__(self, run_dir: Path):
        self.path, self.fd = Path(run_dir) / LOCK, None

    def acquire(self) -> None:
        """Take the lock, or raise RuntimeError naming the live process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RuntimeError(f"run folder {self.path.parent} is in use by a live run ({holder}): wait for it to "
                               "end, or give this run another folder (hydra.run.dir=...)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%Y-%m-%d %H:%M:%S}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (harmless, reused next time)
            self.fd = None


def in_use(run_dir: Path) -> bool:
    """Whether a live process holds run_dir's lock."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
