"""Per-rank state in a checkpoint, with two gloo processes: when ranks hold different optimizer state
(a sharded optimizer), each rank writes and gets back its own shard, and a resume with another
world size is refused; RNG and loader states always come back per rank."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness import distributed as D
from harness.checkpoint import Checkpointer, CheckpointError
from tests.inprocess import SMOKE, compose_config


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
        info = D.DistInfo(rank, rank, 2, torch.device("cpu"))
        model, opt = make(rank)
        for p in model.parameters():  # each rank holds its own shard of momentum
            opt.state[p]["momentum_buffer"] = torch.full_like(p, float(rank + 1))
        torch.manual_seed(100 + rank)
        Checkpointer(cfg, info, run_dir).save(1, 5.0, model, opt, Loader(10 + rank), {})
        expected_draw = torch.rand(3)  # what this rank's RNG yields right after the checkpoint

        model, opt = make(rank)
        loader = Loader(-1)
        torch.manual_seed(999)
        resumed = Checkpointer(cfg, info, run_dir).restore(model, opt, loader)
        assert resumed.step == 1 and resumed.train_time_ms == 5.0
        assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.full_like(p, float(rank + 1)))
                   for p in model.parameters())
        assert loader.pos == 10 + rank
        assert torch.equal(torch.rand(3), expected_draw)
    except BaseException as e:  # report to the parent; a failing assert would otherwise only print
        failures.put(f"rank {rank}: {type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()


def test_sharded_optimizer_state_is_saved_and_restored_per_rank(tmp_path):
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
    assert files == ["manifest.json", "model.pt", "optimizer.rank0.pt", "optimizer.rank1.pt", "trainer.pt"]
    # One rank cannot take over two ranks' optimizer shards.
    model, opt = make(0)
    ckpt = Checkpointer(cfg, D.DistInfo(0, 0, 1, torch.device("cpu")), tmp_path / "run")
    try:
        ckpt.restore(model, opt, Loader(0))
        raise AssertionError("restore should have refused")
    except CheckpointError as e:
        assert "per-rank optimizer state of 2 ranks; resume it with --nproc_per_node=2" in str(e)
