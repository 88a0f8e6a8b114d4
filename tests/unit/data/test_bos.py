"""BOS-aligned loader: rows start at documents, packing rule, caps, ranks, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.tokens import EOT_TOKEN
from data.bos import BOSAlignedLoader
from data.loader import DataError
from data.shards import open_shard, write_shard
from model.masks import document_ids
from tests.support.data_helpers import synthetic_docs, write_stream

B, T = 3, 32


@pytest.fixture
def doc_shards(tmp_path):
    # a few documents longer than a row, so rows get cut; shards cut mid-document like real ones
    docs = synthetic_docs(120, seed=3, mean_len=25, max_len=90)
    return write_stream(tmp_path, np.concatenate(docs), shard_tokens=1500)


def reference_rows(files, row: int, cap: int, count: int) -> list[np.ndarray]:
    """The packing rule written plainly: per shard, whole capped documents until the row is full."""
    rows = []
    while True:
        for f in files:
            t = np.asarray(open_shard(f)).astype(np.int64)
            starts = np.flatnonzero(t == EOT_TOKEN)
            ends = np.append(starts[1:], len(t))
            d = 0
            while d < len(starts):
                pieces, k = [], d
                while sum(map(len, pieces)) < row and k < len(starts):
                    pieces.append(t[starts[k]:min(ends[k], starts[k] + cap)])
                    k += 1
                if sum(map(len, pieces)) < row:
                    break  # shard exhausted: the rest of it is skipped
                rows.append(np.concatenate(pieces)[:row])
                d = k
                if len(rows) == count:
                    return rows


def rows_of(loaders, count):
    out = []
    while len(out) < count:
        for ld in loaders:
            x, y = ld.next_batch()
            out.extend(torch.cat([x, y[:, -1:]], dim=1).numpy())
    return out[:count]


@pytest.mark.parametrize("cap", [0, 20, 7])
@pytest.mark.parametrize("world", [1, 2, 4])
def test_rows_follow_packing_rule_on_every_rank(doc_shards, cap, world):
    """Rank r holds rows r*B..r*B+B-1 of each global micro-step: all rows once, in order, no overlap."""
    count = 400  # several epochs over the shards
    ref = reference_rows(doc_shards, T + 1, cap or T + 1, count)
    got = rows_of([BOSAlignedLoader(doc_shards, B, T, r, world, max_doc_len=cap) for r in range(world)], count)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


def test_every_sequence_starts_with_bos_and_caps_documents(doc_shards):
    ld = BOSAlignedLoader(doc_shards, B, T, max_doc_len=10)
    for _ in range(100):
        x, y = ld.next_batch()
        assert (x[:, 0] == EOT_TOKEN).all()
        assert torch.equal(x[:, 1:], y[:, :-1])
        ids = document_ids(torch.cat([x, y[:, -1:]], 1), EOT_TOKEN)
        for row in ids:  # no document longer than the cap inside a row
            assert torch.bincount(row)[1:].max() <= 10


def test_accumulation_equivalence(doc_shards):
    single = BOSAlignedLoader(doc_shards, B, T, 0, 1)
    pair = [BOSAlignedLoader(doc_shards, B, T, r, 2) for r in range(2)]
    for _ in range(60):
        a = torch.cat([single.next_batch()[0], single.next_batch()[0]])
        assert torch.equal(a, torch.cat([ld.next_batch()[0] for ld in pair]))


def test_resume_gives_same_next_batches(doc_shards):
    ld = BOSAlignedLoader(doc_shards, B, T, 1, 2, max_doc_len=20)
    for _ in range(23):
        ld.next_batch()
    state = ld.state_dict()
    expected = [ld.next_batch() for _ in range(40)]
    fresh = BOSAlignedLoader(doc_shards, B, T, 1, 2, max_doc_len=20)
    fresh.load_state_dict(state)
    for x, _ in expected:
        assert torch.equal(x, fresh.next_batch()[0])
    with pytest.raises(DataError, match="data.mode"):
        fresh.load_state_dict({**state, "mode": "contiguous"})


def test_no_documents_is_a_clear_error(tmp_path):
    write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(1, 500, dtype=np.uint16))
    with pytest.raises(DataError, match="BOS-aligned mode needs documents"):
        BOSAlignedLoader([tmp_path / "fineweb_train_000001.bin"], 2, 8).next_batch()
