"""Sharded orthogonalization: each rank runs Newton-Schulz on 1/world of the hidden matrices,
then one all_gather gives every rank every polar factor U V^T.

Newton-Schulz costs O(rows * cols * min(rows, cols)) per matrix, far more than the elementwise
optimizer work, so it is the part worth splitting. Matrices are sorted by size (largest first)
and dealt round-robin, which balances the ranks' work to within one matrix of each size class.
Each rank concatenates its results into one flat fp32 buffer, padded to the longest rank's
length (all_gather needs equal sizes on gloo and NCCL); every rank knows the deal and the
shapes, so it unpacks the gathered buffers without any further communication.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_round_robin(sizes: list[int], world: int) -> list[list[int]]:
    """Deal item indices to ranks: sort by size, largest first (ties: original order), then
    item k of that order goes to rank k % world. Returns, per rank, its item indices in the
    order that rank processes (and packs) them."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    return [order[r::world] for r in range(world)]


def gather_updates(outputs: list[torch.Tensor], deal: list[list[int]], shapes: list[torch.Size],
                   rank: int, world: int) -> list[torch.Tensor]:
    """Every item's result on every rank, in item order.

    outputs: this rank's results, for items deal[rank] in that order (fp32, any device).
    deal:    per rank, its item indices (from shard_round_robin); shapes: every item's shape.
    With world == 1 this only reorders; otherwise one all_gather of padded flat fp32 buffers.
    """
    n = len(shapes)
    result: list[torch.Tensor | None] = [None] * n
    if world == 1 or n == 0:  # n is the same on every rank, so all skip the collective together
        for i, out in zip(deal[0], outputs):
            result[i] = out
        return result  # type: ignore[return-value]
    numels = [int(torch.Size(s).numel()) for s in shapes]
    lengths = [sum(numels[i] for i in deal[r]) for r in range(world)]
    longest = max(lengths)
    device = outputs[0].device if outputs else _default_device()
    flat = torch.zeros(longest, dtype=torch.float32, device=device)
    if outputs:
        flat[:lengths[rank]] = torch.cat([o.reshape(-1).float() for o in outputs])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    for r in range(world):
        offset = 0
        for i in deal[r]:
            result[i] = gathered[r][offset:offset + numels[i]].view(shapes[i])
            offset += numels[i]
    return result  # type: ignore[return-value]


def _default_device() -> torch.device:
    """Device for a rank that owns no item: NCCL needs a CUDA tensor, gloo a CPU one."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
