"""What to do when the loss is NaN or infinite: stop naming where to go back to, or skip the step.

`train.nonfinite=stop` (default) checks the losses the loop logs anyway (no extra device sync) and
stops at the first non-finite one with the step, the value and the last good checkpoint.
`train.nonfinite=skip` checks every step's loss averaged over the ranks (one all-reduce and sync per
step, so every rank takes the same decision) and drops that step's update everywhere, counting
skips; more than `train.max_nonfinite_skips` skips stop the run as above.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from harness.config.schema import NonFinitePolicy, TrainConfig
from harness.process import distributed as D


class NonFiniteLoss(RuntimeError):
    """Training diverged; the message names the step, the loss and the checkpoint to resume from."""


class NonFiniteGuard:
    def __init__(self, tc: TrainConfig, last_good: Callable[[int], str]):
        """last_good(step): a phrase naming the newest checkpoint written before `step`."""
        self.policy, self.max_skips, self.last_good = tc.nonfinite, tc.max_nonfinite_skips, last_good
        self.skipped = 0
        self.skipped_steps: set[int] = set()

    def skip_step(self, step: int, loss: torch.Tensor) -> bool:
        """After the backward of 0-based `step`: True if its update must be dropped (on every rank).

        `loss` is this rank's mean loss over the accumulation (a device scalar). Only under the skip
        policy does this synchronize (all-reduce of the loss).
        """
        if self.policy is not NonFinitePolicy.skip:
            return False
        mean = D.all_reduce_mean(loss.detach().clone()).item()  # NaN on any rank makes it NaN on all
        if math.isfinite(mean):
            return False
        self.skipped += 1
        self.skipped_steps.add(step + 1)
        print(f"warning: loss is {mean} at step {step + 1}: update skipped on every rank "
              f"({self.skipped}/{self.max_skips} skips allowed, train.max_nonfinite_skips)", flush=True)
        if self.skipped > self.max_skips:
            raise NonFiniteLoss(f"train loss is {mean} at step {step + 1}, and {self.skipped} steps were skipped "
                                f"(more than train.max_nonfinite_skips={self.max_skips}); {self.last_good(step + 1)}; "
                                "lower optim.lr or enable train.grad_clip")
        return True

    def check(self, step: int, value: float, what: str = "train") -> None:
        """Raise NonFiniteLoss for a non-finite logged loss, unless that step's update was skipped."""
        if math.isfinite(value) or (what == "train" and step in self.skipped_steps):
            return
        raise NonFiniteLoss(f"{what} loss is {value} at step {step}; {self.last_good(step)}; "
                            "lower optim.lr or enable train.grad_clip")
