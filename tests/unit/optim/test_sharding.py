"""Sharded orthogonalization in one process: the deal and the gather (the 2-process gloo runs:
tests/e2e/test_optim_distributed.py)."""
import torch

from optim.distributed import gather_updates, shard_round_robin


def test_round_robin_deal_is_size_sorted_and_complete():
    sizes = [10, 40, 40, 5, 30, 40]
    deal = shard_round_robin(sizes, 2)
    assert deal == [[1, 5, 0], [2, 4, 3]]  # order 1,2,5,4,0,3 dealt alternately
    assert sorted(i for r in deal for i in r) == list(range(6))
    assert shard_round_robin(sizes, 1) == [[1, 2, 5, 4, 0, 3]]
    assert shard_round_robin(sizes, 8)[7] == []  # more ranks than matrices: some idle


def test_gather_single_process_restores_item_order():
    shapes = [torch.Size([2, 3]), torch.Size([4, 1])]
    deal = shard_round_robin([6, 4], 1)
    outs = [torch.ones(2, 3), torch.zeros(4, 1)]
    got = gather_updates(outs, deal, shapes, 0, 1)
    assert got[0].shape == (2, 3) and got[1].shape == (4, 1)
