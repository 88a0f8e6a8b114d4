"""The speedrun's token shard format, read and written safely.

A shard is a 1024-byte header of 256 little-endian int32 followed by the tokens
as little-endian uint16:

    header[0] = 20240520 (magic), header[1] = 1 (version), header[2] = token count

Reading memory-maps the body (no copy); every open checks the header and that the
file size matches the token count, so a truncated download or a foreign file is
reported with its path instead of silently feeding garbage to training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic_io import atomic_open

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


class ShardError(ValueError):
    """A shard file is missing, foreign, truncated or otherwise unusable."""


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    num_tokens: int


def read_header(path: str | os.PathLike) -> ShardInfo:
    """Validate a shard's header and size; return its token count.

    Raises ShardError naming the file and what is wrong.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"cannot read shard {path}: {e.strerror or e}") from e
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"shard {path} is {size} bytes, shorter than the {HEADER_BYTES}-byte header "
                         "(truncated or not a token shard; re-download or re-tokenize it)")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(f"shard {path} has magic {int(header[0])}, expected {MAGIC} "
                         "(not a speedrun token shard)")
    if header[1] != VERSION:
        raise ShardError(f"shard {path} has version {int(header[1])}, expected {VERSION}")
    num_tokens = int(header[2])
    expected = HEADER_BYTES + num_tokens * TOKEN_DTYPE.itemsize
    if num_tokens < 0 or size != expected:
        raise ShardError(f"shard {path} is {size} bytes but its header promises {num_tokens} tokens "
                         f"({expected} bytes): truncated or corrupt; re-download or re-tokenize it")
    return ShardInfo(path, num_tokens)


def open_shard(path: str | os.PathLike) -> np.memmap:
    """Memory-map a validated shard's tokens: shape [num_tokens], dtype uint16."""
    info = read_header(path)
    if info.num_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)  # np.memmap cannot map zero bytes
    return np.memmap(info.path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(info.num_tokens,))


def shard_header(num_tokens: int) -> bytes:
    """The 1024-byte header of a shard of `num_tokens` tokens (magic, version, count, zeros)."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, num_tokens
    return header.tobytes()


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> ShardInfo:
    """Write tokens (any integer array, values < 65536) as a shard, atomically.

    The file appears under its final name only once complete and fsynced, so a
    crash or a full disk never leaves a half-written shard that looks valid.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ValueError("token ids must lie in [0, 65535] to fit the uint16 shard format")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(shard_header(tokens.size))
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())
    return ShardInfo(path, int(tokens.size))


def find_shards(directory: str | os.PathLike, pattern: str) -> list[Path]:
    """Sorted shard paths in `directory` matching a glob `pattern` (may be empty)."""
    return sorted(Path(directory).glob(pattern))
