"""Resumable download of one file from a Hugging Face dataset repo.

Why not `hf_hub_download`: in recent huggingface_hub versions it downloads into a
process-unique temporary file that is deleted when the transfer fails, so an
interrupted 200 MB shard restarts from zero, and every run goes through the hub
cache. For a few hundred shards we want a transfer that survives Ctrl-C and
network drops and resumes where it stopped. So the hub's own pieces are used for
what they are good at, and only the transfer is ours:

- `hf_hub_url` builds `{endpoint}/datasets/{repo}/resolve/{revision}/{file}`
  (endpoint = HF_ENDPOINT, read at call time, so a mirror or a test server works);
- `get_hf_file_metadata` sends the HEAD the hub expects (user agent, HF_TOKEN
  / saved login, HF_HUB_OFFLINE, HF_HUB_ETAG_TIMEOUT) and returns the commit
  (X-Repo-Commit), the file's ETag (X-Linked-Etag: the sha256 for LFS files),
  its size (X-Linked-Size) and where to GET it (the redirect's Location, a CDN);
- we GET that location with `Range: bytes=N-` into `DIR/.download/NAME.part`,
  next to a small JSON noting the ETag the bytes belong to. A later run resumes
  the part only if the ETag is unchanged; a server that ignores Range (200) or
  answers 416 restarts the file cleanly. Transient errors (connection drops,
  timeouts, 5xx) are retried in-process with backoff, resuming each time.
- The finished part is checked (size, sha256 when the ETag is one) and handed
  to the caller's `verify` (the shard header check) before it is renamed to its
  final name: a corrupt or truncated file never appears under the final name.
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
from urllib.parse import urlparse

import requests
import urllib3
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import build_hf_headers

CHUNK = 1 << 16  # bytes per read: the most a dropped connection can cost (without read1)
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(RuntimeError):
    """A file could not be downloaded or did not verify; the message says what to do."""


class HubUnreachable(DownloadError):
    """Offline mode, or the endpoint cannot be reached: no point trying further files."""


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str  # the resolve URL on the hub
    location: str  # where the bytes are (CDN after the hub's redirect)
    etag: str
    size: int | None
    commit: str | None


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    env = (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in {"1", "on", "yes", "true"}
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def resolve(repo_id: str, filename: str, revision: str = "main", token: str | bool | None = None) -> RemoteFile:
    """HEAD the file on the hub; DownloadError/HubUnreachable with a one-line reason."""
    endpoint = hub_endpoint()
    if offline_mode():
        raise HubUnreachable(f"HF_HUB_OFFLINE is set: cannot download {filename}")
    url = hf_hub_url(repo_id, filename, repo_type="dataset", revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except OfflineModeIsEnabled as e:
        raise HubUnreachable(f"HF_HUB_OFFLINE is set: cannot download {filename}") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 404 and "Entry" in type(e).__name__:
            raise DownloadError(f"{repo_id}@{revision} has no file {filename} (HTTP 404): the dataset has fewer "
                                "files than asked (lower --train-shards) or another name (--prefix)") from None
        if status in (401, 403, 404):
            raise DownloadError(f"dataset repo {repo_id}@{revision} is not accessible at {endpoint} (HTTP {status}): "
                                "check the repo name / --revision, or log in (HF_TOKEN) if it is gated") from None
        raise HubUnreachable(f"the hub at {endpoint} answered {filename} with {_first_line(e)}; retry later") from None
    except Exception as e:  # noqa: BLE001 - DNS, refused, timeout, proxy, TLS: the hub is out of reach
        raise HubUnreachable(f"cannot reach the Hugging Face hub at {endpoint} ({_first_line(e)}): check your "
                             "network/proxy and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use files already downloaded") from None
    if not meta.etag or not meta.commit_hash:
        raise HubUnreachable(f"{endpoint} answered without ETag / X-Repo-Commit headers for {filename}: it is not a "
                             "Hugging Face hub endpoint; check HF_ENDPOINT")
    return RemoteFile(filename, url, meta.location or url, meta.etag, meta.size, meta.commit_hash)


def _get_headers(remote: RemoteFile, token: str | bool | None, offset: int) -> dict[str, str]:
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"  # byte ranges must address the file itself
    if urlparse(remote.location).netloc != urlparse(remote.url).netloc:
        headers.pop("authorization", None)  # signed CDN URL: the token must not leave the hub
        headers.pop("Authorization", None)
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return headers


def _transfer(remote: RemoteFile, part: Path, token, progress) -> int:
    """One GET from the current size of `part` to the end; returns the total size."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset == remote.size:
        return offset
    if remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    timeout = (constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT)
    with requests.get(remote.location, headers=_get_headers(remote, token, offset), stream=True,
                      timeout=timeout) as r:
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


def download(remote: RemoteFile, dest: Path, *, token: str | bool | None = None,
             verify: Callable[[Path], None] | None = None, retries: int = 5, retry_wait: float = 1.0,
             progress: Callable[[int, int | None], None] = lambda done, total: None) -> Path:
    """Download `remote` to `dest` (resuming a previous part), verify it, rename it into place."""
    work = dest.parent / ".download"
    work.mkdir(parents=True, exist_ok=True)
    part, note = work / f"{dest.name}.part", work / f"{dest.name}.part.json"
    try:
        if json.loads(note.read_text()).get("etag") != remote.etag:
            part.unlink(missing_ok=True)  # bytes of another version of the file
    except (OSError, ValueError):
        part.unlink(missing_ok=True)  # no note: cannot know what the bytes are
    note.write_text(json.dumps({"etag": remote.etag, "size": remote.size, "commit": remote.commit, "url": remote.url}))
    failures, wait = 0, retry_wait
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            size = _transfer(remote, part, token, progress)
            break
        except _Restart:
            continue
        except Exception as e:  # noqa: BLE001 - classified below
            if not _transient(e):
                raise DownloadError(f"download of {remote.filename} from {remote.url} failed: {_first_line(e)}") from None
            now = part.stat().st_size if part.exists() else 0
            failures = 0 if now > before else failures + 1  # progress resets the budget
            if failures > retries:
                total = f" of {remote.size}" if remote.size else ""
                raise DownloadError(f"download of {remote.filename} interrupted at byte {now}{total} "
                                    f"({_first_line(e)}); run the same command again to resume") from None
            time.sleep(wait if failures else 0)
            wait = min(wait * 2, 30) if failures else retry_wait
    if SHA256.match(remote.etag) and sha256_file(part) != remote.etag:
        part.unlink()
        raise DownloadError(f"{remote.filename}: sha256 of the downloaded bytes does not match the hub's "
                            f"({remote.etag[:12]}...); the transfer was corrupted, run the command again")
    if remote.size is not None and size != remote.size:
        part.unlink()
        raise DownloadError(f"{remote.filename}: got {size} bytes, the hub announced {remote.size}; run again")
    if verify is not None:
        try:
            verify(part)
        except Exception as e:
            part.unlink()
            raise DownloadError(f"{remote.filename} from {remote.url} is not a valid file: {e}") from None
    os.replace(part, dest)
    note.unlink(missing_ok=True)  # the caller removes the empty .download folder once all files are done
    return dest
