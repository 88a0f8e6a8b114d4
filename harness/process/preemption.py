"""Stop on SIGTERM / SIGINT at a step boundary, on every rank at the same step.

Schedulers (SLURM, Kubernetes, spot instances) announce preemption with SIGTERM and kill the job a
little later; Ctrl-C sends SIGINT. The handler only raises a flag: the step in flight finishes, then
the ranks agree (a one-element MAX all-reduce, every `stop_check_every` steps) so that all of them
write the same checkpoint and leave together, even when only one rank got the signal. A second
SIGINT aborts at once (KeyboardInterrupt), for a user who does not want to wait.
"""
from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Raised after the stop checkpoint is written; train.py reports it and exits 0."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step  # optimizer steps done (the checkpoint's step)


class StopRequest:
    """Context manager: installs the handlers (main thread only) and restores the previous ones."""

    def __init__(self, enabled: bool, check_every: int, device: torch.device, announce: bool = True):
        self.enabled, self.check_every, self.device = enabled, check_every, device
        self.announce = announce  # print the notice (rank 0 only: every rank of a torchrun job gets the signal)
        self.signal_name: str | None = None  # the signal this process received
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            raise KeyboardInterrupt  # second Ctrl-C: the user does not want to wait for the checkpoint
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            if self.announce:
                print(f"{self.signal_name} received: finishing the current step, then writing a checkpoint "
                      "and stopping", flush=True)

    def __enter__(self) -> "StopRequest":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, step: int) -> bool:
        """Whether every rank should stop before running `step` (the same answer on every rank).

        Called by every rank at the top of every step; collective on the check cadence only.
        """
        if not self.enabled or step % self.check_every:
            return False
        local = self.signal_name is not None
        if not dist.is_initialized():
            return local
        backend_device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=backend_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def reason(self) -> str:
        return self.signal_name or "a stop signal on another rank"
