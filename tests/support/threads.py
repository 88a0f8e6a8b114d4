"""One torch thread for a test module's tiny matmuls: on shared cores more threads only spin against each other
(80x slower seen). Use: `from tests.support.threads import one_thread  # noqa: F401` (an autouse fixture)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
