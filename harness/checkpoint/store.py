"""Checkpoint folders on disk: written atomically, listed only when complete, verified when read.

Layout of a checkpoint directory (`checkpoint.dir`, default `<run dir>/checkpoints`):

    step_000120/            one complete checkpoint (the name is the optimizer steps done)
        model.pt            torch.save'd tensors and plain data only (read with weights_only=True)
        optimizer.pt
        trainer.pt
        manifest.json       written last: format, step, and every file's size and sha256
    .tmp-step_000140-xyz/   a checkpoint being written (never listed; removed at the next save)

A checkpoint is built in a temporary folder, every file fsynced, the manifest written last, the
folder fsynced and then renamed to `step_NNNNNN` (and the parent fsynced), so a crash, a kill or a
full disk at any point leaves either the complete new checkpoint or none, and never touches the
previous ones. Reading checks the manifest's sizes and hashes before unpickling anything: torch's
zip reader does not check CRCs, so a flipped byte would otherwise load silently.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common.atomic_io import fsync_dir

FORMAT = "speedrun-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
_NAME = re.compile(r"^step_(\d+)$")
_STALE_PREFIXES = (".tmp-", ".old-", ".del-")


class CheckpointError(ValueError):
    """A checkpoint cannot be written, found, trusted or used; the message names the path and the fix."""


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def describe_os_error(e: OSError) -> str:
    """'No space left on device (ENOSPC)' from an OSError."""
    code = errno.errorcode.get(e.errno or 0, "")
    return f"{e.strerror or e}" + (f" ({code})" if code else "")


# ---- writing ------------------------------------------------------------------------------------

class _HashingWriter:
    """File-like wrapper for torch.save: hashes and counts the bytes on their way to disk (one pass).

    torch.save calls `write` from C++ and turns any exception raised there into a RuntimeError of its
    own (`[enforce fail at inline_container.cc:...] unexpected pos ...`), which names neither a full
    disk nor a Ctrl-C. The writer keeps the real exception so that save_file can raise it instead.
    """

    def __init__(self, f):
        self.f, self.sha, self.nbytes = f, hashlib.sha256(), 0
        self.error: BaseException | None = None

    def write(self, data) -> int:
        try:
            view = memoryview(data)
            self.sha.update(view)
            self.nbytes += view.nbytes
            return self.f.write(view)
        except BaseException as e:  # OSError (ENOSPC, EIO, ...), KeyboardInterrupt (a second Ctrl-C)
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_file(obj: Any, path: Path) -> dict:
    """torch.save `obj` to `path` and fsync it. Returns its manifest entry {"bytes", "sha256"}.

    Raises OSError when the disk refuses a write (ENOSPC, ...), whether torch.save or the final flush
    sees it, and KeyboardInterrupt when a second Ctrl-C lands inside torch.save.
    """
    f = open(path, "wb")
    writer = _HashingWriter(f)
    try:
        try:
            torch.save(obj, writer)
        except RuntimeError as e:  # torch's wrapper of what went wrong in the write: raise that instead
            real = writer.error or (e.__context__ if isinstance(e.__context__, (OSError, KeyboardInterrupt)) else None)
            if real is None:
                raise
            raise real from None
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk fails the close's flush too: report the first error
            f.close()
        raise
    f.close()
    return {"bytes": writer.nbytes, "sha256": writer.sha.hexdigest()}


class PendingCheckpoint:
    """A checkpoint folder under construction in `root`; `commit` publishes it, `abort` removes it."""

    def __init__(self, root: Path, step: int):
        self.root, self.step, self.files = root, step, {}
        root.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{step_name(step)}-", dir=root))

    def add(self, name: str, obj: Any) -> None:
        self.files[name] = save_file(obj, self.tmp / name)

    def commit(self, meta: dict) -> Path:
        manifest = {"format": FORMAT, "version": VERSION, "step": self.step, **meta, "files": self.files}
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.tmp)
        final = self.root / step_name(self.step)
        old = None
        if final.exists():  # the same step again (a resumed run re-reaching it): swap, then delete the old one
            old = self.root / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
        os.rename(self.tmp, final)
        fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_stale(root: Path) -> None:
    """Delete leftovers of writes or deletions that were killed midway (never listed as checkpoints)."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(_STALE_PREFIXES):
                shutil.rmtree(p, ignore_errors=True)


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (keep=0: keep all). Returns the deleted."""
    found = list_checkpoints(root)
    doomed = [p for _, p in found[:-keep]] if keep > 0 else []
    for p in doomed:
        hidden = p.with_name(f".del-{p.name}")  # unlisted at once, even if the deletion is cut short
        os.rename(p, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
    return doomed


def set_aside(paths: list[Path]) -> list[Path]:
    """Rename checkpoints out of the listing (kept on disk, never resumed from automatically)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for p in paths:
        target = p.with_name(f"abandoned-{p.name}-{stamp}")
        os.rename(p, target)
        moved.append(target)
    return moved


# ---- listing and reading ------------------------------------------------------------------------

def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, path), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / MANIFEST).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder from what a user passes as resume=PATH: the checkpoint itself, a folder of
    checkpoints (its newest) or a run folder (the newest in its checkpoints/)."""
    if not path.exists():
        raise CheckpointError(f"resume={path}: no such file or folder; pass a checkpoint folder "
                              "(.../checkpoints/step_NNNNNN), a run folder, resume=auto or resume=none")
    if path.is_dir() and (path / MANIFEST).is_file():
        return path
    for folder in (path, path / "checkpoints"):
        if folder.is_dir() and (found := latest(folder)) is not None:
            return found
    if path.is_file():
        raise CheckpointError(f"resume={path} is a file, not a speedrun checkpoint folder (one with a {MANIFEST}); "
                              "checkpoints of other trainers cannot be resumed")
    raise CheckpointError(f"resume={path} holds no complete checkpoint (no step_NNNNNN/{MANIFEST} in it or in its "
                          "checkpoints/ folder)")


def read_manifest(path: Path) -> dict:
    """The manifest of checkpoint folder `path`, checked to be ours and of a version we read."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({e}); it is damaged, resume from another "
                              "checkpoint") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a speedrun checkpoint ({MANIFEST} has no "
                              f"format={FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {manifest.get('version')}, this code reads "
                              f"version {VERSION}")
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST} lists no files")
    return manifest


def verify(path: Path, manifest: dict) -> None:
    """Check every listed file's size and sha256 (reads them once; they are then in the page cache)."""
    for name, entry in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        size = f.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"checkpoint {path} is damaged: {name} is {size} bytes, the manifest says "
                                  f"{entry['bytes']} (truncated or overwritten); resume from another checkpoint")
        sha = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                sha.update(chunk)
        if sha.hexdigest() != entry["sha256"]:
            raise CheckpointError(f"checkpoint {path} is damaged: {name} does not match its sha256 in the manifest "
                                  "(changed after writing); resume from another checkpoint")


def load_file(path: Path, what: str) -> Any:
    """torch.load with weights_only=True (tensors and plain containers only, no arbitrary code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln or "WeightsUnpickler" in ln]
        first = lines[0] if lines else type(e).__name__
        raise CheckpointError(f"{path} ({what}) holds objects other than tensors and plain data, refused by "
                              f"torch.load(weights_only=True): {first}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} ({what}) cannot be read as a torch file: {first}") from None
