"""Write a file all at once or not at all.

Every file the harness writes that someone relies on later (a token shard, a checkpoint's
manifest, a committed report under results/) goes through `atomic_open`: the bytes go to a
hidden temporary file in the same folder, which is fsynced and then renamed over the final
name, and the folder is fsynced so the rename itself survives a power cut. A crash, a kill
or a full disk therefore leaves either the old file or the new one, never a torn mix, and
the temporary file is removed when the write fails.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open `path` for writing; the file appears under its name only when the block ends cleanly.

    mode is "wb" or "w" (text, UTF-8 unless `encoding` says otherwise). The temporary file is
    created with O_EXCL under a random name and mode 0o666 minus the umask, so the result gets
    the permissions an ordinary open() would give (mkstemp would make it 0600).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace the file at `path` by `text` (UTF-8) all at once."""
    with atomic_open(path, "w") as f:
        f.write(text)
