"""data.mode=varlen against records 29, 43 and 46's own data generators (issue 25).

Each script's `distributed_data_generator` runs as rank r of 8 (grad accumulation 1: the 8-GPU run)
for every r, on tiny synthetic shards (documents of 1-60 tokens starting with 50256, shards of
4,000 tokens, so steps cross shard boundaries); ours runs at world sizes 1, 2, 4 and 8, where rank
r's micro-step a must equal script rank a * w + r at the same step: inputs, targets and cu_seqlens,
values, dtypes and shapes, exactly. The batch size changes twice (record 46's `.send`; records 29
and 43 take the same call at accumulation 1), a checkpoint resumes mid-stage and mid-step, and
record 43's first-shard quickload is exercised with its 4,000,000 shrunk to a few hundred tokens.
Skipped without ../shared.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from data.config import VarlenVersion
from data.varlen import VarlenLoader, VarlenValidation
from tests.support.data_helpers import synthetic_docs, write_stream
from tests.support.reference_scripts import REF_DIR, load

pytestmark = pytest.mark.skipif(not REF_DIR.exists(), reason="needs ../shared/reference/modded-nanogpt")

V, CAP, STEPS = 8, 16, 24
SIZES = {0: 24, 8: 40, 16: 56}  # rank tokens from that step on (record 46's stages, shrunk)
VERSIONS = {"record29_fa3": VarlenVersion.record29, "record43_cautiouswd": VarlenVersion.record43,
            "record46_batchsizeschedule": VarlenVersion.record43}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("varlen")
    docs = synthetic_docs(3000, seed=5, mean_len=18, max_len=60)
    # spare shards at the end: 43/46's preloader thread reads one shard ahead of the steps compared
    write_stream(folder, np.concatenate(docs), shard_tokens=4000)
    val = np.concatenate(synthetic_docs(150, seed=6, mean_len=18, max_len=60))
    write_stream(folder, val[:1000], shard_tokens=1000, prefix="fineweb_val")  # two val shards: 1,000 + 1,200 tokens
    write_stream(folder, val[1000:2200], shard_tokens=1200, prefix="fineweb_val_b")
    return folder


def as_rank(module, rank: int, world: int = V) -> None:
    """The script's `dist` as rank `rank` of `world` (its generator reads them when it starts)."""
    module.dist = types.SimpleNamespace(is_initialized=lambda: True, get_rank=lambda: rank,
                                        get_world_size=lambda: world)


def script_steps(module, pattern: str, steps: int) -> list[list[tuple]]:
    """[rank][step] -> the script generator's (inputs, targets, cu_seqlens) on 8 GPUs."""
    out = []
    for rank in range(V):
        as_rank(module, rank)
        gen = module.distributed_data_generator(pattern, SIZES[0] * V, CAP, grad_accum_steps=1)
        out.append([gen.send((SIZES[s] * V, CAP, 1) if s in SIZES and s else None) for s in range(steps)])
    return out


def ours(files, version, rank, world, quickload) -> VarlenLoader:
    return VarlenLoader(files, SIZES[0], CAP, rank, world, virtual_ranks=V, version=version,
                        quickload_tokens=quickload)


def run(loader: VarlenLoader, first: int, last: int) -> list[list[tuple]]:
    """Steps first..last-1 of one rank: [step][micro] -> (inputs, targets, cu_seqlens)."""
    steps = []
    for s in range(first, last):
        if s in SIZES and s:
            loader.set_sizes(SIZES[s], CAP)
        steps.append([loader.next_batch() for _ in range(loader.accum_steps)])
    return steps


def assert_same(got: tuple, want: tuple, where: str) -> None:
    for name, g, w in zip(("inputs", "targets", "cu_seqlens"), got, want):
        assert (g.dtype, g.shape) == (w.dtype, w.shape), f"{where} {name}: {g.dtype}{tuple(g.shape)} vs {w.dtype}"
        assert torch.equal(g, w), f"{where} {name} differs at {torch.nonzero(g != w)[:3].tolist()}"


# (script, its 4,000,000): with 700 record 43/46's quickload prefix runs out at step 2 (the run moves to
# shard 2); with 2000 the first 5 steps fit in it and step 6 needs the full index
CASES = [("record29_fa3", 4_000_000), ("record43_cautiouswd", 4_000_000), ("record43_cautiouswd", 700),
         ("record46_batchsizeschedule", 4_000_000), ("record46_batchsizeschedule", 700),
         ("record46_batchsizeschedule", 2000)]


@pytest.mark.parametrize("script,quickload", CASES)
def test_every_rank_at_every_world_size_sees_the_8_gpu_run(shards, script, quickload):
    folder = shards
    module = load(script, constants={4_000_000: quickload}, within="BOSFinder")
    want = script_steps(module, str(folder / "fineweb_train_*.bin"), STEPS)
    files = sorted(folder.glob("fineweb_train_*.bin"))
    for world in (1, 2, 4, 8):
        for rank in range(world):
            got = run(ours(files, VERSIONS[script], rank, world, quickload), 0, STEPS)
            for s in range(STEPS):
                for a, batch in enumerate(got[s]):
                    assert_same(batch, want[a * world + rank][s], f"world {world} rank {rank} step {s} micro {a}")


def test_the_steps_cross_shard_boundaries_and_the_quickload_prefix_matters(shards):
    folder = shards
    files = sorted(folder.glob("fineweb_train_*.bin"))
    full, quick = (ours(files, VarlenVersion.record43, 0, 8, q) for q in (4_000_000, 700))
    shards_seen = []
    for s in range(STEPS):
        if s in SIZES and s:
            full.set_sizes(SIZES[s], CAP)
        full.next_batch()
        shards_seen.append(full.shard)
    assert len(set(shards_seen)) >= 3, shards_seen
    quick_first = [quick.next_batch()[0] for _ in range(5)]
    full = ours(files, VarlenVersion.record43, 0, 8, 4_000_000)
    assert any(not torch.equal(q, full.next_batch()[0]) for q in quick_first) and quick.shard == 1
    prefix = ours(files, VarlenVersion.record43, 0, 8, 2000)
    for _ in range(6):
        prefix.next_batch()
    assert prefix.shard == 0 and prefix.quick_left == 0


@pytest.mark.parametrize("world,resume_micro", [(2, 0), (2, 1), (4, 1), (1, 0), (1, 5)])
def test_a_checkpoint_mid_stage_resumes_the_scripts_stream(shards, world, resume_micro):
    folder = shards
    module = load("record46_batchsizeschedule")
    want = script_steps(module, str(folder / "fineweb_train_*.bin"), STEPS)
    files = sorted(folder.glob("fineweb_train_*.bin"))
    k = 11  # inside the second stage (sizes changed at step 8)
    for rank in range(world):
        first = ours(files, VarlenVersion.record43, rank, world, 4_000_000)
        run(first, 0, k)
        for _ in range(resume_micro):
            first.next_batch()
        state = first.state_dict()
        again = ours(files, VarlenVersion.record43, rank, world, 4_000_000)  # built with stage 1's sizes
        again.load_state_dict(state)
        for a in range(resume_micro, again.accum_steps):
            assert_same(again.next_batch(), want[a * world + rank][k], f"resumed rank {rank} step {k} micro {a}")
        for s, micro in enumerate(run(again, k + 1, STEPS), k + 1):
            for a, batch in enumerate(micro):
                assert_same(batch, want[a * world + rank][s], f"resumed rank {rank} step {s} micro {a}")


@pytest.mark.parametrize("script", ["record29_fa3", "record46_batchsizeschedule"])
def test_validation_is_the_scripts_unaligned_stream(shards, script):
    folder = shards
    module = load(script)
    L, steps = 16, 12  # 12 steps of 8 x 16 tokens: 7 from the first val shard, then the rule moves to the next
    want = []
    for rank in range(V):
        as_rank(module, rank)
        gen = module.distributed_data_generator(str(folder / "fineweb_val*.bin"), L * V, -1, grad_accum_steps=1,
                                                align_to_bos=False)
        want.append([next(gen) for _ in range(steps)])
    files = sorted(folder.glob("fineweb_val*.bin"))
    for world in (1, 2, 4, 8):
        for rank in range(world):
            val = VarlenValidation(files, steps * V * L, L, rank, world, virtual_ranks=V)
            got = list(val)
            assert len(got) == len(val) == steps * V // world  # the scripts' val_steps at world `world`
            for i, batch in enumerate(got):
                s, a = divmod(i, V // world)
                assert_same(batch, want[a * world + rank][s], f"val world {world} rank {rank} step {s} micro {a}")
    assert {shard for shard, _ in val.steps} == {0, 1}
