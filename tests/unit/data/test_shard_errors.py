"""Bad shards and bad shapes: each a clear one-line error naming the file (or key) and the fix."""
from __future__ import annotations

import numpy as np
import pytest

from data.bos import BOSAlignedLoader
from data.loader import ContiguousLoader, DataError, resolve_shards, validation_batches
from data.shards import HEADER_BYTES, ShardError, write_shard

GOOD = np.arange(2000, dtype=np.uint16) % 50000


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def patch_header(path, index: int, value: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[4 * index:4 * index + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(raw))


@pytest.fixture
def shard(tmp_path):
    return write_shard(tmp_path / "fineweb_train_000001.bin", GOOD).path


@pytest.mark.parametrize("make", [ContiguousLoader, BOSAlignedLoader])
def test_wrong_magic(shard, make):
    patch_header(shard, 0, 12345)
    with pytest.raises(ShardError) as e:
        make([shard], 2, 8)
    assert str(shard) in one_line(e) and "magic 12345" in str(e.value)


def test_wrong_version(shard):
    patch_header(shard, 1, 7)
    with pytest.raises(ShardError) as e:
        ContiguousLoader([shard], 2, 8)
    assert str(shard) in one_line(e) and "version 7" in str(e.value)


@pytest.mark.parametrize("cut", [10, HEADER_BYTES + 100])
def test_size_not_matching_header(shard, cut):
    shard.write_bytes(shard.read_bytes()[:cut])  # truncated download
    with pytest.raises(ShardError) as e:
        ContiguousLoader([shard], 2, 8)
    assert str(shard) in one_line(e) and ("truncated" in str(e.value))


def test_size_larger_than_header(shard):
    shard.write_bytes(shard.read_bytes() + b"\0\0")
    with pytest.raises(ShardError, match="header promises 2000 tokens"):
        ContiguousLoader([shard], 2, 8)


@pytest.mark.parametrize("where", [0, 1999, 1000])
def test_token_id_beyond_vocab(tmp_path, where):
    tokens = GOOD.copy()
    tokens[where] = 50300  # e.g. a shard from another tokenizer
    path = write_shard(tmp_path / "fineweb_val_000000.bin", tokens).path
    with pytest.raises(ShardError) as e:
        ContiguousLoader([path], 2, 8, vocab_size=50257)
    msg = one_line(e)
    assert str(path) in msg and "50300 >= vocab size 50257" in msg and f"at token {where:,} of 2,000" in msg
    if where <= 32:  # validation reads (and checks) only the val_tokens + 1 tokens it evaluates
        with pytest.raises(ShardError, match="50300"):
            validation_batches([path], 32, 2, 8, vocab_size=50257)
    else:
        validation_batches([path], 32, 2, 8, vocab_size=50257)
    ContiguousLoader([path], 2, 8, vocab_size=0)  # check off: accepted


@pytest.mark.parametrize("loader", ["contiguous", "bos"])
def test_one_bad_id_in_the_middle_of_a_large_shard_is_found(tmp_path, loader):
    """Every id is checked, not a sample: one bad id at 123,457 of 1M tokens (between what 16 sampled
    windows of 8192 would see) stops the loader naming the file, the position and the fix, whether it
    is in the first shard (checked at open) or a later one (checked by the prefetch thread)."""
    good = np.tile(GOOD, 500)  # 1,000,000 tokens, documents starting with <|endoftext|>
    bad = good.copy()
    bad[123_457] = 50300
    first = write_shard(tmp_path / "a" / "fineweb_train_000001.bin", bad).path
    make = ContiguousLoader if loader == "contiguous" else BOSAlignedLoader
    with pytest.raises(ShardError) as e:
        make([first], 4, 64, vocab_size=50257)
    msg = one_line(e)
    assert msg == (f"shard {first} holds token id 50300 >= vocab size 50257 at token 123,457 of 1,000,000: it was not "
                   "tokenized with this vocabulary; re-tokenize it (python -m data.prep.tokenize), or, if its vocabulary "
                   "is larger, set model.vocab_size above 50300")
    ok = write_shard(tmp_path / "b" / "fineweb_train_000001.bin", good[:300_000]).path
    later = write_shard(tmp_path / "b" / "fineweb_train_000002.bin", bad).path
    ld = make([ok, later], 4, 64, vocab_size=50257)
    with pytest.raises(ShardError, match=f"shard {later} holds token id 50300 .* at token 123,457 of 1,000,000"):
        for _ in range(2000):  # 300k tokens at 256 per batch: the second shard is reached
            ld.next_batch()


def test_bad_second_shard_surfaces_when_reached(tmp_path, shard):
    bad = tmp_path / "fineweb_train_000002.bin"
    write_shard(bad, np.full(100, 60000, dtype=np.uint16))
    ld = ContiguousLoader([shard, bad], 4, 100, vocab_size=50257)  # the prefetch thread finds it first
    with pytest.raises(ShardError, match="fineweb_train_000002.bin holds token id 60000"):
        for _ in range(10):
            ld.next_batch()


def test_empty_folder(tmp_path):
    with pytest.raises(DataError) as e:
        resolve_shards(str(tmp_path), "fineweb_train_*.bin", "train")
    assert str(tmp_path) in one_line(e) and "python -m data.prep.fineweb download" in str(e.value)


def test_folder_of_text_points_to_tokenize_not_download(tmp_path):
    (tmp_path / "shakespeare.txt").write_text("To be, or not to be")
    with pytest.raises(DataError) as e:
        resolve_shards(str(tmp_path), "fineweb_train_*.bin", "train")
    msg = one_line(e)
    assert "holds text (shakespeare.txt)" in msg and "python -m data.prep.tokenize" in msg and "download" not in msg


def test_fewer_tokens_than_one_global_batch(shard):
    with pytest.raises(DataError) as e:
        ContiguousLoader([shard], 8, 64, rank=0, world=4)
    assert "fewer than one global micro-batch of 2049" in one_line(e) and "micro_batch_seqs" in str(e.value)
    with pytest.raises(DataError, match="fewer than one global micro-batch of 2052"):
        BOSAlignedLoader([shard], 4, 512)
    with pytest.raises(DataError, match="fewer than train.val_tokens"):
        validation_batches([shard], 4096, 8, 64)


def test_unreadable_file(tmp_path):
    path = tmp_path / "fineweb_train_000001.bin"
    path.mkdir()  # a folder where a shard should be: open() fails even for root
    with pytest.raises(ShardError) as e:
        ContiguousLoader([path], 2, 8)
    assert f"cannot read shard {path}" in one_line(e)


def test_bad_shapes(shard):
    with pytest.raises(DataError, match="rank 2 is outside world size 2"):
        ContiguousLoader([shard], 2, 8, rank=2, world=2)
    with pytest.raises(DataError, match="must be >= 1"):
        BOSAlignedLoader([shard], 0, 8)
    with pytest.raises(DataError, match="bos_max_doc_len"):
        BOSAlignedLoader([shard], 2, 8, max_doc_len=-1)


def test_verify_command_names_each_bad_shard(tmp_path, shard, capsys):
    from data.prep.fineweb import main

    bad = write_shard(tmp_path / "fineweb_train_000002.bin", np.full(10, 50300, dtype=np.uint16)).path
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"shard {bad} holds token id 50300" in err
    bad.unlink()
    assert main(["verify", str(tmp_path)]) == 0
