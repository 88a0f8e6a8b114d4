import numpy as np
import pytest

from data.shards import HEADER_BYTES, MAGIC, ShardError, open_shard, read_header, write_shard


def test_round_trip_preserves_tokens(tmp_path):
    tokens = np.array([50256, 1, 2, 65535, 0], dtype=np.int64)
    write_shard(tmp_path / "s.bin", tokens)
    assert read_header(tmp_path / "s.bin").num_tokens == 5
    assert open_shard(tmp_path / "s.bin").tolist() == tokens.tolist()
    assert (tmp_path / "s.bin").stat().st_size == HEADER_BYTES + 10
    assert [p.name for p in tmp_path.iterdir()] == ["s.bin"]  # no temp file left behind


def corrupt(path, offset, value):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("mutate,message", [
    (lambda p: corrupt(p, 0, 123), "has magic 123, expected 20240520"),
    (lambda p: corrupt(p, 4, 7), "has version 7, expected 1"),
    (lambda p: p.write_bytes(p.read_bytes()[:-2]), "header promises 4 tokens"),
    (lambda p: corrupt(p, 8, 10**6), "header promises 1000000 tokens"),
    (lambda p: p.write_bytes(b"\0" * 100), "shorter than the 1024-byte header"),
    (lambda p: p.unlink(), "cannot read shard"),
])
def test_bad_shards_fail_naming_the_file(tmp_path, mutate, message):
    path = tmp_path / "fineweb_train_000001.bin"
    write_shard(path, np.arange(4))
    mutate(path)
    with pytest.raises(ShardError, match=message) as err:
        open_shard(path)
    assert str(path) in str(err.value)


def test_write_refuses_ids_outside_uint16(tmp_path):
    with pytest.raises(ValueError, match="65535"):
        write_shard(tmp_path / "s.bin", np.array([70000]))
    assert not list(tmp_path.iterdir())


def test_magic_constant_matches_the_speedrun():
    assert MAGIC == 20240520
