"""A loopback stand-in for the Hugging Face Hub: the endpoints huggingface_hub 2.4 really calls.

Download (`snapshot_download`), in order:
  GET  /api/models/{repo}/revision/{rev}            {"id", "sha", "siblings", "private"}
  GET  /api/models/{repo}/tree/{sha}?recursive=...  [{"type": "file", "path", "size", "oid"}]
  HEAD /{repo}/resolve/{rev}/{path}                 X-Repo-Commit, ETag, Content-Length
  GET  /{repo}/resolve/{rev}/{path}                 the bytes
Upload (`create_repo` + `create_commit`):
  POST /api/repos/create                            {"name", "organization", "visibility"?}
  POST /api/validate-yaml                           the README's metadata
  POST /api/models/{repo}/preupload/{rev}           -> every file "regular" (inline, no LFS/xet)
  POST /api/models/{repo}/commit/{rev}              NDJSON: header, then {"key": "file", "value":
                                                    {"path", "content" (base64), "encoding"}}
Large files (`*.safetensors`, as LFS/xet files on the Hub) are served as the Hub does: `/resolve`
answers 302 with `X-Linked-Etag` (the sha256), `X-Linked-Size` and `X-Repo-Commit`, and a `Location`
on another host (`localhost` instead of `127.0.0.1`, standing in for the CDN), where
  GET  /cdn/{sha256}                                the bytes (never with the Authorization header)
Private repos answer 401 with `X-Error-Code: RepoNotFound` (as the Hub does) unless the request
carries `Authorization: Bearer <token>`. `truncate` names files whose GET body is cut to half of
the size that HEAD announced; `drop_once` names files whose next GET announces every byte, sends
half and hangs up. `silent` makes the server accept every connection and never answer (until it
shuts down); `fail_with` answers every request with that HTTP status. Every request is logged in
`requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    private: bool = False
    sha: str = ""

    def __post_init__(self) -> None:
        self.bump()

    def bump(self) -> None:
        digest = hashlib.sha1(
            json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in self.files.items())).encode()
        )
        self.sha = digest.hexdigest()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class FakeHub:
    token: str = "hf_good_token"
    repos: dict[str, Repo] = field(default_factory=dict)
    truncate: set[str] = field(default_factory=set)
    drop_once: set[str] = field(default_factory=set)
    cdn_suffixes: tuple[str, ...] = (".safetensors",)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    silent: bool = False
    fail_with: int | None = None
    closing: threading.Event = field(default_factory=threading.Event)

    def add_folder(self, repo_id: str, folder: Path, *, private: bool = False) -> Repo:
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        self.repos[repo_id] = Repo(files, private=private)
        return self.repos[repo_id]

    def calls(self, method: str | None = None) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests if method in (None, r.method)]


_REVISION = re.compile(r"^/api/models/([^/]+/[^/]+)/revision/(.+)$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_PREUPLOAD = re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/(.+)$")
_COMMIT = re.compile(r"^/api/models/([^/]+/[^/]+)/commit/(.+)$")
_CDN = re.compile(r"^/cdn/([0-9a-f]{64})$")


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # -------------------------------------------------------------- plumbing
        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(
            self, status: int, body: bytes = b"", headers: dict | None = None, length: int | None = None
        ):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data, headers: dict | None = None) -> None:
            self._send(
                status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}
            )

        def _repo(self, repo_id: str) -> Repo | None:
            """The repo, or None after answering 404/401 as the Hub does."""
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return None
            if repo.private and self.headers.get("Authorization") != f"Bearer {hub.token}":
                if self.headers.get("Authorization"):
                    self._json(401, {"error": "Invalid credentials in Authorization header"})
                else:
                    self._json(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return None
            return repo

        def _record(self, body: bytes = b"") -> str | None:
            """The request's path, or None once it was answered by `silent` or `fail_with`."""
            path = unquote(urlsplit(self.path).path)
            keep = ("authorization", "content-type", "range", "user-agent")
            headers = {k.title(): v for k, v in self.headers.items() if k.lower() in keep}
            hub.requests.append(Request(self.command, self.path, headers, body))
            if hub.silent:
                hub.closing.wait()  # never answer; the connection drops when the server stops
                self.close_connection = True
                return None
            if hub.fail_with is not None:
                self._json(hub.fail_with, {"error": f"fake Hub failure {hub.fail_with}"})
                return None
            return path

        # -------------------------------------------------------------- download
        def do_HEAD(self) -> None:
            if (path := self._record()) is not None:
                self._get(path)

        def do_GET(self) -> None:
            if (path := self._record()) is not None:
                self._get(path)

        def _get(self, path: str) -> None:
            if m := _REVISION.match(path):
                if repo := self._repo(m[1]):
                    if m[2] not in ("main", repo.sha):
                        self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                        return
                    siblings = [{"rfilename": p} for p in repo.files]
                    self._json(
                        200, {"id": m[1], "sha": repo.sha, "siblings": siblings, "private": repo.private}
                    )
            elif m := _TREE.match(path):
                if repo := self._repo(m[1]):
                    entries = [
                        {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for p, b in repo.files.items()
                    ]
                    self._json(200, entries)
            elif m := _RESOLVE.match(path):
                if repo := self._repo(m[1]):
                    data = repo.files.get(m[3])
                    if data is None:
                        self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                        return
                    headers = {
                        "X-Repo-Commit": repo.sha,
                        "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                        "Content-Type": "application/octet-stream",
                    }
                    if m[3].endswith(hub.cdn_suffixes):
                        sha256 = hashlib.sha256(data).hexdigest()
                        headers["X-Linked-Etag"] = f'"{sha256}"'
                        headers["X-Linked-Size"] = str(len(data))
                        headers["Location"] = f"{hub.url.replace('127.0.0.1', 'localhost')}/cdn/{sha256}"
                        self._send(302, b"", headers)
                        return
                    self._serve_bytes(m[3], data, headers)
            elif m := _CDN.match(path):
                for repo in hub.repos.values():
                    for name, data in repo.files.items():
                        if hashlib.sha256(data).hexdigest() == m[1]:
                            self._serve_bytes(name, data, {"Content-Type": "application/octet-stream"})
                            return
                self._json(404, {"error": "no such object"})
            else:
                self._json(404, {"error": f"no such endpoint {path}"})

        def _serve_bytes(self, name: str, data: bytes, headers: dict) -> None:
            if self.command == "GET" and name in hub.truncate:
                data = data[: len(data) // 2]  # a cut-off body, shorter than HEAD announced
            if self.command == "GET" and name in hub.drop_once:
                hub.drop_once.discard(name)  # announce every byte, send half, hang up
                self._send(200, data[: len(data) // 2], headers, length=len(data))
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(200, data, headers)

        # -------------------------------------------------------------- upload
        def do_POST(self) -> None:
            body = self._body()
            path = self._record(body)
            if path is None:
                return
            if path == "/api/repos/create":
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._json(401, {"error": "Invalid credentials in Authorization header"})
                    return
                data = json.loads(body)
                repo_id = (
                    f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                )
                if repo_id in hub.repos:
                    self._json(
                        409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    )
                    return
                hub.repos[repo_id] = Repo({}, private=data.get("visibility") == "private")
                self._json(200, {"url": f"{hub.url}/{repo_id}"})
            elif path == "/api/validate-yaml":
                self._json(200, {"errors": [], "warnings": []})
            elif m := _PREUPLOAD.match(path):
                if self._repo(m[1]):
                    files = json.loads(body)["files"]
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                    self._json(200, {"files": modes, "commitOid": hub.repos[m[1]].sha})
            elif m := _COMMIT.match(path):
                if repo := self._repo(m[1]):
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    assert lines[0]["key"] == "header", lines[0]
                    for item in lines[1:]:
                        assert item["key"] == "file" and item["value"]["encoding"] == "base64", item
                        repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    repo.bump()
                    self._json(
                        200, {"commitUrl": f"{hub.url}/{m[1]}/commit/{repo.sha}", "commitOid": repo.sha}
                    )
            else:
                self._json(404, {"error": f"no such endpoint {path}"})

    return Handler


class HubServer:
    """`with HubServer() as hub:` serves `hub` (a `FakeHub`) on 127.0.0.1 at `hub.url`."""

    def __init__(self) -> None:
        self.hub = FakeHub()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self._server.daemon_threads = True
        self.hub.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self.hub

    def __exit__(self, *exc) -> None:
        self.hub.closing.set()  # silent handlers return
        self._server.shutdown()
        self._server.server_close()


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
