"""Fault injection for the failure tests: make one rank die, get a signal or see a NaN at a given step.

Set SPEEDRUN_FAULT to one or more `;`-separated faults, each `ACTION:key=value:...`:

    kill:step=7              SIGKILL this process at the top of step 7 (as `kill -9`)
    exit:step=5:rank=1       os._exit(1) on rank 1 only (a crashed worker)
    sigterm:step=6:rank=1    send SIGTERM to itself (as a scheduler's preemption notice)
    sleep:ms=200             sleep at the top of every step (gives a test time to signal mid-run)
    nan:step=5:rank=1        the loss of step 5 on rank 1 reads NaN (then train.nonfinite decides)

`step` is the optimizer step about to run (0-based); `rank` (default: every rank) the global rank;
`attempt` (default: every attempt) torchrun's TORCHELASTIC_RESTART_COUNT, so a fault can fire on
the first attempt only and the elastic restart then runs clean. Unset, this module does nothing.
train.py calls it in two visible places: `at_step` at the top of every step of the loop, and
`active("nan", step)` where train_step has the step's loss.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

ENV = "SPEEDRUN_FAULT"
ACTIONS = ("kill", "exit", "sigterm", "sleep", "nan")


@dataclass(frozen=True)
class Fault:
    action: str
    step: int | None = None
    rank: int | None = None
    attempt: int | None = None
    ms: int = 0

    def applies(self, step: int) -> bool:
        return ((self.step is None or self.step == step)
                and (self.rank is None or self.rank == int(os.environ.get("RANK", "0")))
                and (self.attempt is None or self.attempt == int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))))


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        action, *fields = item.split(":")
        if action not in ACTIONS:
            raise ValueError(f"{ENV}: unknown fault {action!r} in {spec!r}; choose from {ACTIONS}")
        kwargs = {}
        for f in fields:
            key, _, value = f.partition("=")
            if key not in ("step", "rank", "attempt", "ms"):
                raise ValueError(f"{ENV}: unknown field {key!r} in {item!r}")
            kwargs[key] = int(value)
        faults.append(Fault(action, **kwargs))
    return faults


def active(action: str, step: int) -> bool:
    """Whether a fault of `action` fires at `step` on this rank and attempt."""
    spec = os.environ.get(ENV)
    return bool(spec) and any(f.action == action and f.applies(step) for f in parse(spec))


def at_step(step: int) -> None:
    """Fire the process-level faults due at the top of `step` (called once per step by the loop)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for f in parse(spec):
        if not f.applies(step):
            continue
        if f.action == "sleep":
            time.sleep(f.ms / 1000)
        elif f.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif f.action == "exit":
            print(f"fault injection: rank {os.environ.get('RANK', '0')} exits at step {step}", flush=True)
            os._exit(1)
        elif f.action == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
