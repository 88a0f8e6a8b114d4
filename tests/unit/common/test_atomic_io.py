"""atomic_open: the file is replaced whole or left alone, and no temporary file survives."""
import os

import pytest

from common.atomic_io import atomic_open, write_text_atomic


def test_replaces_whole_file_with_ordinary_permissions(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    write_text_atomic(path, "new ünïcode")
    assert path.read_text(encoding="utf-8") == "new ünïcode"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["report.md"]


def test_failure_mid_write_keeps_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "shard.bin"
    path.write_bytes(b"old bytes")
    with pytest.raises(OSError, match="disk full"):
        with atomic_open(path) as f:
            f.write(b"half of the new")
            raise OSError(28, "disk full")
    assert path.read_bytes() == b"old bytes"
    assert os.listdir(tmp_path) == ["shard.bin"]


def test_rejects_append_mode(tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_open(tmp_path / "x", "ab"):
            pass
