"""Per-rank state in a checkpoint, with two gloo processes: the optimizer state (identical on every
rank, as all our optimizers keep it) is written once, and each rank gets back its own RNG and loader
state; one rank can resume the two-rank checkpoint."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.checkpoint.checkpointer import Checkpointer
from harness.process import distributed as D
from tests.support.inprocess import SMOKE, compose_config


class Loader:
    """Stands in for a data loader: a per-rank position."""

    def __init__(self, pos: int):
        self.pos = pos

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]


def make(rank: int):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt


def worker(rank: int, store_file: str, run_dir: str, cfg, failures) -> None:
    torch.set_num_threads(1)  # forked from a process that may have an OpenMP pool: stay single-threaded
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        info = D.RankInfo(rank, rank, 2, torch.device("cpu"))
        model, opt = make(rank)
        for p in model.parameters():  # replicated state, as the hybrid optimizer keeps it
            opt.state[p]["momentum_buffer"] = torch.full_like(p, 7.0)
        torch.manual_seed(100 + rank)
        Checkpointer(cfg, info, run_dir).save(1, 5.0, model, opt, Loader(10 + rank), {})
        expected_draw = torch.rand(3)  # what this rank's RNG yields right after the checkpoint

        model, opt = make(rank)
        loader = Loader(-1)
        torch.manual_seed(999)
        resumed = Checkpointer(cfg, info, run_dir).restore(model, opt, loader)
        assert resumed.step == 1 and resumed.train_time_ms == 5.0
        assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.full_like(p, 7.0))
                   for p in model.parameters())
        assert loader.pos == 10 + rank
        assert torch.equal(torch.rand(3), expected_draw)
    except BaseException as e:  # report to the parent; a failing assert would otherwise only print
        failures.put(f"rank {rank}: {type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e  # two forked gloo ranks
def test_rng_and_loader_state_come_back_per_rank(tmp_path):
    cfg = compose_config(*SMOKE)
    failures = mp.get_context("fork").SimpleQueue()
    # fork, not spawn: a spawned child re-imports torch (seconds); these children only touch tiny tensors
    mp.start_processes(worker, args=(str(tmp_path / "store"), str(tmp_path / "run"), cfg, failures), nprocs=2,
                       start_method="fork")
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert not errors, errors
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "step_000001").iterdir())
    assert files == ["manifest.json", "model.pt", "optimizer.pt", "trainer.pt"]
    # One rank resumes the two-rank checkpoint: the optimizer state is whole, the loader is rank 0's.
    model, opt = make(0)
    loader = Loader(-1)
    Checkpointer(cfg, D.RankInfo(0, 0, 1, torch.device("cpu")), tmp_path / "run").restore(model, opt, loader)
    assert loader.pos == 10
    assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.full_like(p, 7.0)) for p in model.parameters())
