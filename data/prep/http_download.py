"""Resumable download of one file over HTTP: the one transfer every download of the harness uses
(FineWeb shards from the hub, data/prep/hub_download.py; HellaSwag's val file, evals/hellaswag_data.py).

- The bytes go to `DIR/.download/NAME.part`, next to a small JSON noting the ETag they belong to; a
  later run resumes the part with `Range: bytes=N-` only if the ETag is unchanged. A server that
  ignores Range (200), answers 416, or answers 206 for another range restarts the file cleanly.
- Transient errors (connection drops, timeouts, 408/429/5xx) are retried in-process with backoff,
  resuming each time; progress resets the retry budget, so a slow link with drops still finishes.
- The finished part is checked (size; sha256 when the ETag is one) and handed to the caller's
  `verify` before it is renamed to its final name: a torn or wrong file never appears there.
- `give_up_unreachable`: when not a byte was ever received and the first connection fails, the
  caller hears `Unreachable` at once (a machine without network), not after a round of retries.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

CHUNK = 1 << 16  # bytes per read: the most a dropped connection can cost (without read1)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
Headers = Callable[[int], dict]  # offset -> request headers (the Range header included when offset > 0)


class DownloadError(RuntimeError):
    """A file could not be downloaded or did not verify; the message says what to do."""


class Unreachable(DownloadError):
    """The server cannot be reached at all (offline, DNS, refused): no point retrying."""


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str  # the address the user knows (the hub's resolve URL, or the file's URL)
    location: str  # where the bytes are GET (a CDN after the hub's redirect; else the URL)
    etag: str | None  # the version the bytes belong to (the sha256 for the hub's LFS files); None: unknown
    size: int | None
    commit: str | None = None


def first_line(e: BaseException) -> str:
    """A short reason: urllib3's underlying one when requests wraps it (name resolution, refused, ...)."""
    reason = getattr(e.args[0], "reason", None) if e.args else None
    if isinstance(reason, BaseException):
        e = reason
    text = str(e).split(">: ", 1)[-1].strip().splitlines()  # drop urllib3's "<...Connection object at 0x..>: "
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def range_headers(offset: int) -> dict:
    """Plain HTTP: ask for the rest of the file; identity encoding, so byte ranges address the file itself."""
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return headers


def _transfer(remote: RemoteFile, part: Path, headers: Headers, timeout, progress) -> int:
    """One GET from the current size of `part` to the end; returns the total size."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset == remote.size:
        return offset
    if remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    with requests.get(remote.location, headers=headers(offset), stream=True, timeout=timeout) as r:
        if r.status_code == 416:  # our part is not a prefix of this file: start over
            part.unlink()
            raise _Restart()
        r.raise_for_status()
        if offset and r.status_code == 200:  # Range ignored: the body is the whole file
            offset = 0
        elif offset and not r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()
            raise _Restart()
        total = remote.size
        if total is None:
            cr = r.headers.get("Content-Range", "")
            total = int(cr.rsplit("/", 1)[1]) if "/" in cr and not cr.endswith("*") else None
            if total is None and r.headers.get("Content-Length"):
                total = offset + int(r.headers["Content-Length"])
        progress(offset, total)
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            for chunk in _body(r):
                f.write(chunk)
                offset += len(chunk)
                progress(offset, total)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and offset != total:
        raise requests.ConnectionError(f"connection closed at byte {offset} of {total}")
    return offset


def _body(r: requests.Response):
    """The response body in chunks. urllib3 2's read1 hands over every byte received before a
    dropped connection (iter_content loses the last partial chunk), so a resume loses nothing."""
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:
        yield from r.iter_content(CHUNK)
        return
    while chunk := read1(CHUNK):
        yield chunk


class _Restart(Exception):
    """The partial file cannot be resumed; the next attempt starts from byte 0."""


def _transient(e: BaseException) -> bool:
    if isinstance(e, requests.HTTPError):
        code = e.response.status_code if e.response is not None else 0
        return code in (408, 429) or code >= 500
    return isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                          urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    return h.hexdigest()


def download(remote: RemoteFile, dest: Path, *, headers: Headers = range_headers, timeout=30.0,
             verify: Callable[[Path], None] | None = None, retries: int = 5, retry_wait: float = 1.0,
             give_up_unreachable: bool = False,
             progress: Callable[[int, int | None], None] = lambda done, total: None) -> Path:
    """Download `remote` to `dest` (resuming a previous part), verify it, rename it into place.
    `verify(part)` raises to refuse the file: a DownloadError passes through as it is, anything else
    becomes one. The caller removes `dest.parent/.download` once it is empty."""
    work = dest.parent / ".download"
    work.mkdir(parents=True, exist_ok=True)
    part, note = work / f"{dest.name}.part", work / f"{dest.name}.part.json"
    try:
        if json.loads(note.read_text()).get("etag") != remote.etag:
            part.unlink(missing_ok=True)  # bytes of another version of the file
    except (OSError, ValueError):
        part.unlink(missing_ok=True)  # no note: cannot know what the bytes are
    note.write_text(json.dumps({"etag": remote.etag, "size": remote.size, "commit": remote.commit, "url": remote.url}))
    failures, wait, received = 0, retry_wait, part.exists()
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            size = _transfer(remote, part, headers, timeout, progress)
            break
        except _Restart:
            continue
        except Exception as e:  # noqa: BLE001 - classified below
            if (give_up_unreachable and not received and not part.exists()
                    and isinstance(e, (requests.ConnectionError, requests.Timeout))):
                raise Unreachable(f"cannot reach {remote.url} ({first_line(e)})") from None
            if not _transient(e):
                raise DownloadError(f"download of {remote.filename} from {remote.url} failed: {first_line(e)}") from None
            now = part.stat().st_size if part.exists() else 0
            received = received or now > 0
            failures = 0 if now > before else failures + 1  # progress resets the budget
            if failures > retries:
                total = f" of {remote.size}" if remote.size else ""
                raise DownloadError(f"download of {remote.filename} interrupted at byte {now}{total} "
                                    f"({first_line(e)}); run the same command again to resume") from None
            time.sleep(wait if failures else 0)
            wait = min(wait * 2, 30) if failures else retry_wait
    def discard() -> None:  # a finished but refused file: nothing to resume
        part.unlink(missing_ok=True)
        note.unlink(missing_ok=True)

    if remote.etag and SHA256.match(remote.etag) and sha256_file(part) != remote.etag:
        discard()
        raise DownloadError(f"{remote.filename}: sha256 of the downloaded bytes does not match the server's "
                            f"({remote.etag[:12]}...); the transfer was corrupted, run the command again")
    if remote.size is not None and size != remote.size:
        discard()
        raise DownloadError(f"{remote.filename}: got {size} bytes, the server announced {remote.size}; run again")
    if verify is not None:
        try:
            verify(part)
        except DownloadError:
            discard()
            raise
        except Exception as e:
            discard()
            raise DownloadError(f"{remote.filename} from {remote.url} is not a valid file: {e}") from None
    os.replace(part, dest)
    note.unlink(missing_ok=True)
    return dest
