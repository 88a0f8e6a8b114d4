"""harness/process/cpu_alloc.py: after keep_freed_memory(), a head-sized training step stops faulting in fresh pages."""
import ctypes
import ctypes.util
import resource
import sys

import pytest
import torch

from harness.process.cpu_alloc import M_MMAP_MAX, M_TRIM_THRESHOLD, keep_freed_memory


def _faults_per_step(steps: int = 2) -> float:
    """Minor page faults per step of a [512 tokens x 50304 vocab] head + cross-entropy (103 MB logits)."""
    torch.manual_seed(0)
    w = torch.randn(50304, 64, requires_grad=True)
    x, y = torch.randn(512, 64), torch.randint(0, 50304, (512,))

    def step():
        torch.nn.functional.cross_entropy(x @ w.T, y).backward()
        w.grad = None

    step()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / steps


@pytest.mark.e2e  # integration: the process's page-fault counters over 100 MB temporaries
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_big_temporaries_stop_faulting_pages():
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    mallopt(M_MMAP_MAX, 65536)          # glibc's defaults, in case this process already switched
    mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    before = _faults_per_step()
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    after = _faults_per_step()
    assert before > 20_000 and after < 0.5 * before, (before, after)  # 103 MB = 25k pages per temporary
