"""data.mode=varlen (data/varlen.py): the packing worked by hand, world sizes, staged sizes, resume,
the prefetch thread, validation, and bad inputs failing with the key's name. The scripts themselves
are compared in tests/records/test_records29_46_data.py."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from data import varlen
from data.build import build_train_loader, build_val_batches
from data.config import DataConfig, LoaderMode, VarlenConfig, VarlenVersion
from data.loader import DataError
from data.shards import write_shard
from data.varlen import VarlenLoader, VarlenValidation, cu_seqlens_size
from harness.config.schema import ConfigError
from tests.support.data_helpers import synthetic_docs, write_stream
from tests.unit.data.test_build import composed

B = 99  # the document token of the hand-made shards


def cu(*bounds: int, rank_tokens: int) -> torch.Tensor:
    out = torch.full((cu_seqlens_size(rank_tokens),), rank_tokens, dtype=torch.int32)
    out[:len(bounds) + 1] = torch.tensor([0, *bounds], dtype=torch.int32)
    return out


@pytest.fixture
def hand_shard(tmp_path):
    # junk before the first document; documents of 4, 7, 2, 4 and 3 tokens (the last one runs to the end)
    tokens = [7, B, 1, 2, 3, B, 4, 5, 6, 7, 8, 9, B, 10, B, 11, 12, 13, B, 14, 15]
    return [write_shard(tmp_path / "fineweb_train_000001.bin", np.array(tokens)).path]


def test_the_packing_worked_by_hand(hand_shard):
    # L = 4, C = 3, two virtual ranks at world 1: each chunk holds 5 tokens of documents cut to 3
    loader = VarlenLoader(hand_shard, 4, 3, 0, 1, virtual_ranks=2, version=VarlenVersion.record29, bos=B)
    x0, y0, c0 = loader.next_batch()  # [B 1 2] + [B 4] (cut to fill): the rest of document 2 is never read
    assert x0.tolist() == [B, 1, 2, B] and y0.tolist() == [1, 2, B, 4]
    assert torch.equal(c0, cu(3, 4, rank_tokens=4))  # the last piece counts one token less (the target shift)
    x1, y1, c1 = loader.next_batch()  # the next chunk starts at the next document: [B 10] + [B 11 12]
    assert x1.tolist() == [B, 10, B, 11] and y1.tolist() == [10, B, 11, 12]
    assert torch.equal(c1, cu(2, 4, rank_tokens=4))
    assert (x0.dtype, y0.dtype, c0.dtype, c0.shape) == (torch.int32, torch.int64, torch.int32, (128,))
    # one document (3 tokens) is left, fewer than a step: the next step starts over at the next shard (here: again)
    x2, _, _ = loader.next_batch()
    assert x2.tolist() == x0.tolist() and loader.epoch == 1


def test_cu_seqlens_room_follows_the_records_rule():
    assert [cu_seqlens_size(n) for n in (4, 38_399, 38_400, 49_152, 262_144)] == [128, 128, 128, 256, 896]


def shards(tmp_path, n_docs=900, shard_tokens=1500):
    return write_stream(tmp_path, np.concatenate(synthetic_docs(n_docs, seed=2, mean_len=18, max_len=60)), shard_tokens)


def take(loader: VarlenLoader, steps: int, sizes: dict[int, int] | None = None) -> list[list[tuple]]:
    out = []
    for s in range(steps):
        if sizes and s in sizes:
            loader.set_sizes(sizes[s], 16)
        out.append([loader.next_batch() for _ in range(loader.accum_steps)])
    return out


def test_every_world_size_replays_the_8_rank_order(tmp_path):
    files = shards(tmp_path)
    sizes = {3: 40}
    eight = [take(VarlenLoader(files, 24, 16, r, 8), 10, sizes) for r in range(8)]
    for world in (1, 2, 4):
        for rank in range(world):
            got = take(VarlenLoader(files, 24, 16, rank, world), 10, sizes)
            for s in range(10):
                assert len(got[s]) == 8 // world
                for a, batch in enumerate(got[s]):
                    want = eight[a * world + rank][s][0]
                    assert all(torch.equal(g, w) for g, w in zip(batch, want)), (world, rank, s, a)


def test_staged_sizes_change_between_steps_only(tmp_path):
    loader = VarlenLoader(shards(tmp_path), 24, 16, 0, 4)  # 2 micro-steps per step
    loader.next_batch()
    with pytest.raises(DataError, match="between optimizer steps"):
        loader.set_sizes(40, 16)
    loader.next_batch()
    loader.set_sizes(40, 16)
    x, y, c = loader.next_batch()
    assert x.shape == y.shape == (40,) and int(c[-1]) == 40


@pytest.mark.parametrize("world,micro,new_world", [(2, 0, 2), (2, 1, 2), (8, 0, 2), (1, 3, 1)])
def test_a_checkpoint_resumes_the_same_stream(tmp_path, world, micro, new_world):
    files = shards(tmp_path)
    sizes = {2: 40, 6: 56}
    whole = [take(VarlenLoader(files, 24, 16, r, new_world), 13, sizes) for r in range(new_world)]
    first = VarlenLoader(files, 24, 16, 0, world)
    take(first, 4, sizes)  # mid-stage: the state carries the stage's sizes (40)
    for _ in range(micro):
        first.next_batch()
    state = first.state_dict()
    assert state["rank_tokens"] == 40 and state["micro"] == micro
    for rank in range(new_world):
        again = VarlenLoader(files, 24, 16, rank, new_world)
        again.load_state_dict(state)
        for a in range(micro, again.accum_steps):
            assert all(torch.equal(g, w) for g, w in zip(again.next_batch(), whole[rank][4][a]))
        rest = take(again, 8, {k - 5: v for k, v in sizes.items() if k >= 5})
        assert all(torch.equal(g, w) for s in range(8) for a in range(again.accum_steps)
                   for g, w in zip(rest[s][a], whole[rank][5 + s][a]))


def test_resume_refuses_another_setup(tmp_path):
    files = shards(tmp_path)
    loader = VarlenLoader(files, 24, 16, 0, 2)
    loader.next_batch()
    with pytest.raises(DataError, match="middle of a step at world size 2"):
        VarlenLoader(files, 24, 16, 0, 4).load_state_dict(loader.state_dict())
    with pytest.raises(DataError, match="data.varlen.version=record43"):
        VarlenLoader(files, 24, 16, 0, 2, version=VarlenVersion.record29).load_state_dict(loader.state_dict())
    with pytest.raises(DataError, match="loader state is for data.mode=contiguous"):
        loader.load_state_dict({**loader.state_dict(), "mode": "contiguous"})
    busy = VarlenLoader(files, 24, 16, 0, 2)
    busy.next_batch()  # mid-step, yet a checkpoint still loads
    busy.load_state_dict(loader.state_dict())
    assert all(torch.equal(g, w) for g, w in zip(busy.next_batch(), loader.next_batch()))


def test_record43_quickload_sees_only_the_first_tokens_for_5_steps(tmp_path):
    files = shards(tmp_path, shard_tokens=4000)
    quick = VarlenLoader(files, 24, 16, 0, 8, quickload_tokens=300)
    plain = VarlenLoader(files, 24, 16, 0, 8, version=VarlenVersion.record29)
    # 300 tokens hold fewer than a step (8 x 25 tokens of documents cut to 16): step 1 comes from shard 2
    assert quick.next_batch()[0].tolist() != plain.next_batch()[0].tolist() and quick.shard == 1
    assert quick.quick_left == 0


def test_record43_quickload_lets_the_last_indexed_document_run_to_the_shard_end(hand_shard):
    # only BOS positions below 13 are known for 5 steps: the document at 12 ([B 10]) then runs on into
    # the next one ([B 11 ...]), so one step of 14 tokens is 4 + 7 + 3 tokens in three documents, not four
    quick = VarlenLoader(hand_shard, 13, 10, 0, 1, virtual_ranks=1, bos=B, quickload_tokens=13)
    full = VarlenLoader(hand_shard, 13, 10, 0, 1, virtual_ranks=1, bos=B, version=VarlenVersion.record29)
    (xq, yq, cq), (xf, yf, cf) = quick.next_batch(), full.next_batch()
    assert torch.equal(xq, xf) and torch.equal(yq, yf)
    assert torch.equal(cq, cu(4, 11, 13, rank_tokens=13)) and torch.equal(cf, cu(4, 11, 13, 13, rank_tokens=13))


def test_shards_are_indexed_in_the_prefetch_thread(tmp_path, monkeypatch):
    seen = []
    real = varlen.bos_positions
    monkeypatch.setattr(varlen, "bos_positions",
                        lambda t, bos: seen.append(threading.current_thread().name) or real(t, bos))
    files = shards(tmp_path)
    on = take(VarlenLoader(files, 24, 16, 0, 1), 12)
    assert seen[0] == threading.main_thread().name and "shard-prefetch-1" in seen
    off = take(VarlenLoader(files, 24, 16, 0, 1, prefetch=False), 12)
    assert all(torch.equal(g, w) for a, b in zip(on, off) for x, y in zip(a, b) for g, w in zip(x, y))


def test_validation_reads_the_contiguous_stream_in_the_8_rank_order(tmp_path):
    tokens = np.arange(3000) % 97
    tokens[::10] = B
    files = [write_shard(tmp_path / "fineweb_val_000000.bin", tokens).path]
    val = VarlenValidation(files, 2 * 8 * 20, 20, 1, 2, bos=B)
    batches = list(val)
    assert len(batches) == len(val) == 8  # 2 steps x 4 micro-steps
    x, y, c = batches[5]  # step 1, micro 1: virtual rank 1 * 2 + 1 = 3 at 160 + 3 * 20
    assert x.tolist() == tokens[220:240].tolist() and y.tolist() == tokens[221:241].tolist()
    assert torch.equal(c, cu(0, 10, rank_tokens=20))  # a BOS at 0 gives a second 0, as in the scripts
    assert (x.dtype, y.dtype, c.dtype) == (torch.int32, torch.int64, torch.int32)


def test_bad_inputs_fail_naming_the_key(tmp_path):
    files = shards(tmp_path)
    for key, args in (("data.varlen.max_doc_len", (24, 0)), ("train.seq_len", (0, 16))):
        with pytest.raises(DataError, match=f"{key} must be >= 1"):
            VarlenLoader(files, *args)
    with pytest.raises(ValueError, match="data.varlen.max_doc_len must be >= 1"):
        DataConfig(mode=LoaderMode.varlen, varlen=VarlenConfig(max_doc_len=0)).check()
    with pytest.raises(DataError, match="data.varlen.virtual_ranks=8 must be a positive multiple of the world size 3"):
        VarlenLoader(files, 24, 16, 0, 3)
    with pytest.raises(DataError, match="train.seq_len 3000"):
        VarlenLoader(files, 3000, 16).next_batch()  # no shard holds a step
    no_bos = [write_shard(tmp_path / "none" / "fineweb_train_000001.bin", np.arange(500) % 50).path]
    with pytest.raises(DataError, match="fineweb_train_000001.bin holds no document start .token 99.*data.mode"):
        VarlenLoader(no_bos, 24, 16, bos=B)
    ones = [write_shard(tmp_path / "short" / "fineweb_train_000001.bin", np.full(4000, B)).path]
    with pytest.raises(DataError, match="holds 201 documents, more than the 127"):
        VarlenLoader(ones, 200, 16, bos=B).next_batch()
    with pytest.raises(DataError, match="train.val_tokens=100 must be a positive multiple of data.varlen.virtual"):
        VarlenValidation(files, 100, 20)


def test_build_gives_the_varlen_loader_and_validation(tmp_path):
    write_stream(tmp_path, np.concatenate(synthetic_docs(400, seed=5, mean_len=18, max_len=60)), 3000)
    write_shard(tmp_path / "fineweb_val_000000.bin", np.concatenate(synthetic_docs(100, seed=6)))
    cfg = DataConfig(dir=str(tmp_path), mode=LoaderMode.varlen,
                     varlen=VarlenConfig(max_doc_len=16, val_rank_tokens=16))
    loader = build_train_loader(cfg, 32, 1, 1, 4)  # train.seq_len is the row (rank_tokens)
    assert isinstance(loader, VarlenLoader) and loader.accum_steps == 2 and loader.bos == 50256
    assert loader.next_batch()[0].shape == (32,)
    val = build_val_batches(cfg, 256, 0, 0, 1, 4)
    assert isinstance(val, VarlenValidation) and len(val) == 4


def test_the_keys_compose_and_bad_values_name_the_key():
    cfg = composed("experiment=smoke", "data.mode=varlen", "data.varlen.version=record29")
    assert cfg.data.mode is LoaderMode.varlen and cfg.data.varlen.version is VarlenVersion.record29
    assert (cfg.data.varlen.max_doc_len, cfg.data.varlen.virtual_ranks) == (2048, 8)
    with pytest.raises(ConfigError, match="data.varlen.max_doc_len must be >= 1, got 0"):
        composed("data.mode=varlen", "data.varlen.max_doc_len=0")
    with pytest.raises(ConfigError, match="use them with data.mode=contiguous"):
        composed("data.mode=varlen", "data.repeat_first_batch=true")
