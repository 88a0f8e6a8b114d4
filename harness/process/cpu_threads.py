"""CPU training: how many threads torch uses, chosen once at start (`train.cpu_threads`).

torch's default is one thread per core. For a tiny model every op is a few microseconds of work, so
its threads spend the step synchronizing, and on a loaded machine each sync waits for a descheduled
thread: `experiment=smoke` (about 0.1M parameters) ran 688 ms/step with 2 threads on a 2-core machine
under load and 25 s for the whole run with one. Large models (the 50257-wide head of `cpu_fineweb`:
4.1 s/step with 2 threads, 7.2 s with 1, same machine) do gain from threads.

`train.cpu_threads`:
- `0` (auto): the user's OMP_NUM_THREADS / MKL_NUM_THREADS when set (torchrun sets OMP_NUM_THREADS=1
  for several ranks per node), else 1 thread for a model under TINY_MODEL_PARAMS parameters, else
  torch's default;
- `N > 0`: exactly N threads, whatever the environment says.
Only CPU runs are affected (on CUDA the host threads only feed the GPU). The choice is printed at start
and recorded in metrics.jsonl's "run" event (`cpu_threads`, `cpu_threads_why`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch

TINY_MODEL_PARAMS = 1_000_000  # below this, one thread beats several (see above)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def choose_cpu_threads(setting: int, n_params: int, default: int, env: Mapping[str, str] = os.environ) -> tuple[int, str]:
    """(threads, why) for `train.cpu_threads=setting`; `default` is torch's current thread count."""
    if setting > 0:
        return setting, f"train.cpu_threads={setting}"
    for var in THREAD_ENV_VARS:
        if env.get(var, "").strip():
            return default, f"auto: {var}={env[var].strip()} is set"
    if n_params < TINY_MODEL_PARAMS:
        return 1, f"auto: {n_params:,} parameters < {TINY_MODEL_PARAMS:,}: one is fastest; train.cpu_threads=N to choose"
    return default, "auto: torch's default, one per core; train.cpu_threads=N to choose"


def set_cpu_threads(setting: int, n_params: int) -> tuple[int, str]:
    """Apply the choice to this process; returns (threads, why)."""
    threads, why = choose_cpu_threads(setting, n_params, torch.get_num_threads())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads, why
