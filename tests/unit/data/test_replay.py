"""data.shard_tail and data.repeat_first_batch replay a record's batch order: against a plain
statement of the rule here, and against the records' own loaders when ../shared is present."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.config import DataConfig, LoaderMode, ShardTail
from data.loader import ContiguousLoader, DataError
from data.replay import ReplayLoader
from tests.support.data_helpers import write_stream
from tests.support.reference_scripts import REF_DIR

needs_reference = pytest.mark.skipif(not REF_DIR.is_dir(), reason="../shared reference scripts not present")
B, T = 2, 16
SIZES = (1000, 700, 1300)  # uneven shards: tails of different lengths


@pytest.fixture
def shards(tmp_path):
    tokens = (np.arange(sum(SIZES)) * 7919 % 50000).astype(np.uint16)
    files, start = [], 0
    for i, n in enumerate(SIZES, 1):
        files += write_stream(tmp_path, tokens[start:start + n], shard_tokens=n, prefix=f"fineweb_train_{i:02d}")
        start += n
    return files, [tokens[sum(SIZES[:i]):sum(SIZES[:i + 1])] for i in range(len(SIZES))]


def expected_starts(n: int, tail: ShardTail, span: int, unit: int, offset: int, repeat_first: bool) -> list:
    """(shard, position of global micro-batch) of the first n reads of the rank whose piece starts
    `offset` tokens into each global micro-batch.
    skip_micro_batch: micro-batch j > 0 of a shard is read only if offset + (j + 1) span + 1 tokens fit.
    skip_step: a step of `unit` tokens is read only if unit + 2 tokens fit (the same on every rank)."""
    out, shard, pos = [], 0, 0
    while len(out) < n:
        if tail is ShardTail.skip_micro_batch:
            fits = pos == 0 or offset + pos + span + 1 <= SIZES[shard]
        else:
            fits = pos % unit or pos + unit + 2 <= SIZES[shard]
        if not fits:
            shard, pos = (shard + 1) % len(SIZES), 0
        out.append((shard, pos))
        pos += span
    if repeat_first:
        out.insert(0, out[0])
    return out[:n]


@pytest.mark.parametrize("tail,world,accum,repeat", [
    (ShardTail.skip_micro_batch, 2, 1, False), (ShardTail.skip_micro_batch, 1, 3, True),
    (ShardTail.skip_step, 1, 4, False), (ShardTail.skip_step, 2, 2, True),
    (ShardTail.skip_step, 2, 1, False)])  # one micro-batch per step: still decided per step, for all ranks
def test_each_unit_is_read_from_one_shard(shards, tail, world, accum, repeat):
    files, per_shard = shards
    span = world * B * T
    loaders = [ReplayLoader(files, B, T, r, world, shard_tail=tail, step_tokens=span * accum,
                            repeat_first_batch=repeat) for r in range(world)]
    n = 3 * sum(SIZES) // span  # about three epochs
    for r, ld in enumerate(loaders):
        for shard, pos in expected_starts(n, tail, span, span * accum, r * B * T, repeat):
            x, y = ld.next_batch()
            lo = pos + r * B * T
            want = per_shard[shard][lo:lo + B * T + 1].astype(np.int64)
            np.testing.assert_array_equal(x.reshape(-1).numpy(), want[:-1])
            np.testing.assert_array_equal(y.reshape(-1).numpy(), want[1:])
        assert ld.epoch >= 2
    if tail is ShardTail.skip_micro_batch and world == 2:  # rank 1 leaves the 1300-token shard one read early
        assert expected_starts(n, tail, span, span, 0, False) != expected_starts(n, tail, span, span, B * T, False)


def test_read_mode_is_the_plain_contiguous_stream(shards):
    files, _ = shards
    plain, replay = ContiguousLoader(files, B, T), ReplayLoader(files, B, T)
    for _ in range(300):
        assert torch.equal(plain.next_batch()[0], replay.next_batch()[0])


@pytest.mark.parametrize("repeat", [False, True])
def test_resume_continues_the_same_batches_and_refuses_another_tail_rule(shards, repeat):
    files, _ = shards
    make = lambda: ReplayLoader(files, B, T, 1, 2, shard_tail=ShardTail.skip_micro_batch, repeat_first_batch=repeat)
    for cut in (0, 1, 40, 44, 45):  # before any batch (repeat pending), after one, mid-shard, at rank 1's shard end
        ref, ld = make(), make()
        for _ in range(cut):
            ref.next_batch(), ld.next_batch()
        fresh = make()
        fresh.load_state_dict(ld.state_dict())
        for _ in range(60):
            assert torch.equal(ref.next_batch()[0], fresh.next_batch()[0])
    with pytest.raises(DataError, match="data.shard_tail=skip_micro_batch, this run uses read"):
        ContiguousLoader(files, B, T, 1, 2).load_state_dict(make().state_dict())


def test_bad_replay_settings_are_one_line_errors(shards):
    files, _ = shards
    with pytest.raises(DataError, match="holds 1000 tokens, fewer than the 1026 that data.shard_tail=skip_step"):
        ReplayLoader(files, B, T, shard_tail=ShardTail.skip_step, step_tokens=1024)
    with pytest.raises(DataError, match="global_batch_tokens \\(48\\) to be a positive multiple"):
        ReplayLoader(files, B, T, shard_tail=ShardTail.skip_step, step_tokens=48)
    with pytest.raises(ValueError, match="use them with data.mode=contiguous"):
        DataConfig(mode=LoaderMode.bos, repeat_first_batch=True).check()


# ---- against the records' own loaders --------------------------------------------------------------

@needs_reference
@pytest.mark.parametrize("script,repeat", [("record04_muon", True), ("record12_flexattn", False)])
def test_micro_batch_order_equals_the_records_loader(shards, script, repeat):
    """Records 4-9 read a batch, reset the loader and read again (first batch twice); record 12 does
    not reset. Both skip a shard's tail per global micro-batch; world 2 with B x T per rank."""
    from tests.support.reference_scripts import load
    ref = load(script)
    files, _ = shards
    pattern = str(files[0].parent / "fineweb_train_*.bin")
    world = 2
    refs = [ref.DistributedDataLoader(pattern, B, T, r, world) for r in range(world)]
    nexts = []
    for ld in refs:  # the script's order: one batch before the loop, then (records 4-9) a reset
        first = ld.next_batch()
        if repeat:
            ld.reset()
        nexts.append(first)
    ours = [ReplayLoader(files, B, T, r, world, shard_tail=ShardTail.skip_micro_batch, repeat_first_batch=repeat)
            for r in range(world)]
    for _ in range(3 * sum(SIZES) // (world * B * T)):
        for r in range(world):
            x_ref = nexts[r][0].reshape(-1)
            nexts[r] = refs[r].next_batch()
            x, _ = ours[r].next_batch()
            assert torch.equal(x.reshape(-1), x_ref.long())


@needs_reference
@pytest.mark.parametrize("world", [1, 2])
def test_step_order_equals_record20s_generator(shards, world, monkeypatch):
    """Record 20 reads whole steps of global_batch tokens; at world 1 our accumulation order is its
    order; at world 2 each of its ranks takes a contiguous half, ours alternate: same sequences."""
    from tests.support.reference_scripts import load
    ref = load("record20_sub3min")
    files, _ = shards
    monkeypatch.chdir(files[0].parent)
    step_tokens, accum = 4 * T, 4 // world
    gens = [ref.distributed_data_generator("fineweb_train_*.bin", step_tokens, r, world) for r in range(world)]
    ours = [ReplayLoader(files, 1, T, r, world, shard_tail=ShardTail.skip_step, step_tokens=step_tokens)
            for r in range(world)]
    compared = 0
    while True:
        try:
            ref_seqs = [s for g in gens for s in next(g)[0].split(T)]
        except (StopIteration, RuntimeError):  # its generator ends after the last shard (no epochs)
            break
        compared += 1
        our_seqs = [ld.next_batch()[0].reshape(-1) for _ in range(accum) for ld in ours]
        if world == 1:
            assert all(torch.equal(a.long(), b) for a, b in zip(ref_seqs, our_seqs))
        else:
            assert sorted(s.tolist() for s in ref_seqs) == sorted(s.tolist() for s in our_seqs)
    assert compared >= sum(SIZES) // step_tokens - len(SIZES)
