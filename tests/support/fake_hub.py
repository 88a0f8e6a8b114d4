"""A stand-in for the Hugging Face hub on 127.0.0.1, faithful to what the download code relies on.

What the hub does (and huggingface_hub's `get_hf_file_metadata` / `hf_hub_download` expect):
- `HEAD {endpoint}/datasets/{repo}/resolve/{revision}/{file}` answers an LFS file with
  302 and headers X-Repo-Commit (40 hex), ETag, X-Linked-Etag (the file's sha256, quoted),
  X-Linked-Size (bytes) and Location: a signed CDN URL on another host;
- a missing file: 404 with X-Error-Code: EntryNotFound; a missing or private repo:
  401 with X-Error-Code: RepoNotFound;
- the CDN serves the bytes to GET with Accept-Ranges: bytes, answers `Range: bytes=N-`
  with 206 and Content-Range: bytes N-(L-1)/L, and is reached without the token.

Here the CDN is the same server under the host name `localhost` (the hub is `127.0.0.1`), so
the client sees a cross-host redirect. Faults for tests, per file name:
`cut[name] = k`: the next k GETs send full headers but only half the remaining body, then drop;
`fail[name] = k`: the next k GETs (after the cut ones) answer 503; `ignore_range`: answer 200 with the whole body;
`serve[name] = bytes`: serve other bytes than the sha256 / size announced (a corrupt CDN).
"""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}  # (repo, filename) -> content
        self.cut: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.serve: dict[str, bytes] = {}
        self.ignore_range = False
        self.log: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: str, filename: str, content: bytes) -> str:
        self.files[(repo, filename)] = content
        return hashlib.sha256(content).hexdigest()

    def requests(self, method: str, needle: str = "") -> list[tuple[str, str, dict]]:
        return [r for r in self.log if r[0] == method and needle in r[1]]

    # --- request handling -------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        with self.lock:
            self.log.append(("HEAD" if head else "GET", h.path, dict(h.headers)))
        m = re.fullmatch(r"/datasets/(.+?/.+?)/resolve/([^/]+)/(.+)", h.path)
        if m:
            return self._resolve(h, *m.groups())
        m = re.fullmatch(r"/cdn/([^/]+)/([0-9a-f]{64})\?sig=ok", h.path)
        if m and h.headers.get("Host", "").startswith("localhost"):
            return self._cdn(h, m.group(1), m.group(2), head)
        self._reply(h, 404, {})

    def _reply(self, h, status: int, headers: dict, body: bytes = b"") -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)

    def _resolve(self, h, repo: str, revision: str, filename: str) -> None:
        if not any(r == repo for r, _ in self.files):
            return self._reply(h, 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        content = self.files.get((repo, filename))
        if content is None:
            return self._reply(h, 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                        "X-Repo-Commit": COMMIT})
        sha = hashlib.sha256(content).hexdigest()
        self._reply(h, 302, {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{hashlib.sha1(sha.encode()).hexdigest()}"',  # the git blob of the LFS pointer
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(content)),
            "Accept-Ranges": "bytes",
            "Location": f"http://localhost:{self.port}/cdn/{filename}/{sha}?sig=ok",
        })

    def _cdn(self, h, filename: str, sha: str, head: bool) -> None:
        content = next((c for (_, f), c in self.files.items() if f == filename), None)
        if content is None or hashlib.sha256(content).hexdigest() != sha:
            return self._reply(h, 404, {})
        content = self.serve.get(filename, content)
        if not head and self.fail.get(filename, 0) > 0 and not self.cut.get(filename, 0):
            self.fail[filename] -= 1
            return self._reply(h, 503, {}, b"busy")
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", ""))
        if rng and not self.ignore_range:
            start = int(rng.group(1))
            if start >= len(content):
                return self._reply(h, 416, {"Content-Range": f"bytes */{len(content)}"})
        body = content[start:]
        h.send_response(206 if start else 200)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{sha}"')
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        h.end_headers()
        if head:
            return
        if self.cut.get(filename, 0) > 0:
            self.cut[filename] -= 1
            h.wfile.write(body[:len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return  # the handler returns: the socket closes mid-body
        h.wfile.write(body)
