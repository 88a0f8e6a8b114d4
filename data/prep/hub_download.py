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
- we GET that location with the harness's one resumable transfer (data/prep/http_download.py:
  `DIR/.download/NAME.part` + its ETag note, Range resume, retries, size/sha256 and the caller's
  `verify` before the final name), sending the hub's headers (token, user agent) except to a CDN.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import build_hf_headers

from data.prep import http_download
from data.prep.http_download import DownloadError, RemoteFile, first_line


class HubUnreachable(DownloadError):
    """Offline mode, or the endpoint cannot be reached: no point trying further files."""


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    env = (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in {"1", "on", "yes", "true"}
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


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
        raise HubUnreachable(f"the hub at {endpoint} answered {filename} with {first_line(e)}; retry later") from None
    except Exception as e:  # noqa: BLE001 - DNS, refused, timeout, proxy, TLS: the hub is out of reach
        raise HubUnreachable(f"cannot reach the Hugging Face hub at {endpoint} ({first_line(e)}): check your "
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


def download(remote: RemoteFile, dest: Path, *, token: str | bool | None = None, **kwargs) -> Path:
    """Download a resolved hub file to `dest` (http_download.download: resume, retries, verify, rename)."""
    return http_download.download(remote, dest, headers=lambda offset: _get_headers(remote, token, offset),
                                  timeout=(constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT), **kwargs)
