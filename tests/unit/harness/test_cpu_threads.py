"""train.cpu_threads: one thread for a tiny model unless the user said otherwise (harness/process/cpu_threads.py)."""
from __future__ import annotations


import pytest
import torch

from harness.process.cpu_threads import (
    TINY_MODEL_PARAMS,
    choose_cpu_threads,
    set_cpu_threads,
)


@pytest.mark.parametrize("setting, n_params, env, expected", [
    (0, 150_000, {}, 1),                                 # smoke's model: one thread
    (0, 7_300_000, {}, 8),                               # cpu_fineweb's: torch's default
    (0, 150_000, {"OMP_NUM_THREADS": "4"}, 8),           # the user's environment is kept (torch read it)
    (0, 150_000, {"MKL_NUM_THREADS": "2"}, 8),
    (3, 150_000, {"OMP_NUM_THREADS": "4"}, 3),           # an explicit train.cpu_threads wins
    (2, 7_300_000, {}, 2),
])
def test_choice(setting, n_params, env, expected):
    threads, why = choose_cpu_threads(setting, n_params, default=8, env=env)
    assert threads == expected and why


def test_threshold_is_a_parameter_count():
    assert choose_cpu_threads(0, TINY_MODEL_PARAMS - 1, 8, {})[0] == 1
    assert choose_cpu_threads(0, TINY_MODEL_PARAMS, 8, {})[0] == 8


def test_set_applies_to_this_process(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    try:
        assert set_cpu_threads(0, 1000)[0] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
