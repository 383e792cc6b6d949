"""A small Hugging Face Hub on loopback, speaking the HTTP API huggingface_hub's client uses, over real bytes.

Endpoints (as the hub answers them; found by reading huggingface_hub 2.4's hf_api.py and file_download.py
and by logging what the client asks):
    GET  /api/{models|datasets}/{repo}[/revision/{rev}][?blobs=true]   repo info: sha (the commit) and siblings
         (rfilename; with blobs=true also size, blobId and lfs {size, sha256, pointerSize})
    HEAD /[datasets/]{repo}/resolve/{rev}/{path}    ETag, X-Repo-Commit, X-Linked-Etag, X-Linked-Size,
    GET  same, with Range: bytes=N-                  Content-Length, Accept-Ranges; 206 + Content-Range
Errors carry X-Error-Code as the hub's do: RepoNotFound (401), RevisionNotFound (404), EntryNotFound (404),
GatedRepo (401) for a gated repo's files without the right `Authorization: Bearer` token.

Faults a test can switch on, per file: `corrupt` (serve other bytes of the same length under the right
headers), `cut` (send part of the body, then drop the connection, N times), `stall` (send part, then hang
until released: a process can be killed mid-transfer). Every request is recorded in `requests`; anything
the server does not know goes to `unhandled`, so a test can assert the client used nothing else.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".parquet", ".bin", ".safetensors")


def git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"          # model | dataset
    gated_token: str | None = None    # files need `Authorization: Bearer <token>`
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


class FakeHub:
    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.unhandled: list[str] = []
        self.corrupt: dict[str, bytes] = {}         # repo path -> bytes served instead
        self.cut: dict[str, tuple[int, int]] = {}   # repo path -> (bytes sent before the drop, times left)
        self.stall: dict[str, int] = {}             # repo path -> bytes sent before hanging
        self.stalled = threading.Event()            # set when a stalled transfer has sent its part
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- setup ---------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def commit(self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "model", branch: str = "main",
               tag: str | None = None, replace: bool = False, gated_token: str | None = None) -> str:
        """A new commit on `branch`: the previous tree updated with `files` (or replaced by them)."""
        repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type, gated_token))
        if gated_token:
            repo.gated_token = gated_token
        parent = repo.refs.get(branch)
        tree = {} if replace or parent is None else dict(repo.commits[parent])
        tree.update(files)
        sha = hashlib.sha1(json.dumps([parent, sorted((p, git_oid(b)) for p, b in tree.items())]).encode()
                           ).hexdigest()
        repo.commits[sha] = tree
        repo.refs[branch] = sha
        if tag:
            repo.refs[tag] = sha
        return sha

    def gets(self, path_part: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and path_part in r.path and "/resolve/" in r.path]

    # --- serving -------------------------------------------------------------------------------------
    def _find(self, repo_type: str, rest: str) -> tuple[Repo | None, str]:
        parts = rest.split("/")
        if len(parts) < 2:
            return None, ""
        return self.repos.get((repo_type, "/".join(parts[:2]))), "/".join(parts[2:])

    def _handler(hub):  # noqa: N805 - the handler class closes over the hub
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _error(self, status: int, code: str, message: str, head: bool):
                body = json.dumps({"error": message}).encode()
                self._send(status, body, {"Content-Type": "application/json", "X-Error-Code": code,
                                          "X-Error-Message": message}, head)

            def _serve(self, head: bool):
                url = urlsplit(self.path)
                path = unquote(url.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with hub._lock:
                    hub.requests.append(Request(self.command, self.path, headers))
                if path.startswith("/api/models/") or path.startswith("/api/datasets/"):
                    repo_type = "model" if path.startswith("/api/models/") else "dataset"
                    rest = path.split("/", 3)[3]
                    repo, tail = hub._find(repo_type, rest)
                    if repo is None:
                        return self._error(401, "RepoNotFound", "Repository not found", head)
                    if tail and not tail.startswith("revision/"):
                        hub.unhandled.append(f"{self.command} {self.path}")
                        return self._error(404, "EntryNotFound", "unknown endpoint", head)
                    rev = tail[len("revision/"):] if tail else "main"
                    return self._info(repo, rev, "blobs" in parse_qs(url.query), head)
                repo_type = "dataset" if path.startswith("/datasets/") else "model"
                rest = path[len("/datasets/"):] if repo_type == "dataset" else path[1:]
                repo, tail = hub._find(repo_type, rest)
                if repo is None or not tail.startswith("resolve/"):
                    hub.unhandled.append(f"{self.command} {self.path}")
                    return self._error(401, "RepoNotFound", "Repository not found", head)
                rev, _, fpath = tail[len("resolve/"):].partition("/")
                return self._resolve(repo, rev, fpath, head)

            def _commit_of(self, repo: Repo, rev: str) -> str | None:
                if rev in repo.commits:
                    return rev
                return repo.refs.get(rev)

            def _info(self, repo: Repo, rev: str, blobs: bool, head: bool):
                sha = self._commit_of(repo, rev)
                if sha is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                siblings = []
                for p, data in sorted(repo.commits[sha].items()):
                    s = {"rfilename": p}
                    if blobs:
                        if p.endswith(LFS_SUFFIXES):
                            s.update(size=len(data), blobId=git_oid(p.encode()),
                                     lfs={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                          "pointerSize": 134})
                        else:
                            s.update(size=len(data), blobId=git_oid(data))
                    siblings.append(s)
                body = {"id": repo.repo_id, "_id": sha[:24], "sha": sha, "private": False,
                        "gated": "manual" if repo.gated_token else False, "siblings": siblings}
                self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

            def _resolve(self, repo: Repo, rev: str, fpath: str, head: bool):
                if repo.gated_token and self.headers.get("Authorization") != f"Bearer {repo.gated_token}":
                    return self._error(401, "GatedRepo", "Access to this repo is restricted: log in and accept "
                                       "its conditions", head)
                sha = self._commit_of(repo, rev)
                if sha is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                data = repo.commits[sha].get(fpath)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", sha)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                lfs = fpath.endswith(LFS_SUFFIXES)
                etag = hashlib.sha256(data).hexdigest() if lfs else git_oid(data)
                headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                if lfs:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": len(data)})
                served = hub.corrupt.get(fpath, data)
                start = 0
                rng = self.headers.get("Range")
                status = 200
                if rng and not head:
                    start = int(rng.split("=", 1)[1].split("-", 1)[0])
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = served[start:]
                headers["Content-Length"] = len(body)
                if head:
                    return self._send(status, b"", headers, head=True)
                cut = stall = None
                with hub._lock:
                    if fpath in hub.cut and hub.cut[fpath][1] > 0:
                        cut, times = hub.cut[fpath]
                        hub.cut[fpath] = (cut, times - 1)
                    stall = hub.stall.pop(fpath, None)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, str(v))
                self.end_headers()
                if cut is None and stall is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[: cut if cut is not None else stall])
                self.wfile.flush()
                if stall is not None:
                    hub.stalled.set()
                    hub.release.wait(60)
                self.close_connection = True
                try:
                    import socket

                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        return Handler


def tiny_gguf(name: str, n_floats: int = 256, extra: dict | None = None) -> bytes:
    """A real, valid GGUF (gguf's own writer): one F32 tensor, general.name, optional split keys."""
    import os
    import tempfile

    import numpy as np
    from gguf import GGUFWriter

    fd, tmp = tempfile.mkstemp(suffix=".gguf")
    os.close(fd)
    try:
        w = GGUFWriter(tmp, "llama")
        w.add_string("general.name", name)
        for k, v in (extra or {}).items():
            w.add_uint16(k, v)
        w.add_tensor("t", (np.arange(n_floats, dtype=np.float32) * (1 + len(name))))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


# --- running the real client in a fresh process, as a rule script runs -----------------------------------

DRIVER = r"""
import json, shutil, sys
args = json.loads(sys.argv[1])
if args.get("free") is not None:  # the disk-space test: this much free space on every disk
    free = args["free"]
    shutil.disk_usage = lambda p: shutil._ntuple_diskusage(1 << 50, (1 << 50) - free, free)
from pathlib import Path
from ggufbench.core.errors import GgufbenchError
try:
    if args["op"] == "quant":
        from ggufbench.sources.hub import download_quant
        from ggufbench.sources.manifest import write_manifest
        files, origin = download_quant(args["repo"], Path(args["dest"]), quant=args.get("quant"),
                                       filename=args.get("file"), revision=args.get("revision", "main"),
                                       lock=args.get("lock"))
        data = write_manifest(Path(args["dest"]) / "manifest.json", "m", args.get("quant") or "q", files, origin)
        print(json.dumps({"files": [str(f) for f in files], "manifest": data}))
    elif args["op"] == "source":
        from ggufbench.sources.registry import fetch_model_source
        origin = fetch_model_source({"hub": args["spec"]}, Path(args["dest"]), Path(args["cache"]))
        print(json.dumps({"origin": origin}))
    elif args["op"] == "corpus":
        from ggufbench.sources.corpus import hub_dataset_text
        text, source = hub_dataset_text(args["repo"], args["config"], args["split"], args.get("revision", "main"),
                                        lock=args.get("lock"))
        Path(args["out"]).write_text(text, encoding="utf-8")
        print(json.dumps({"source": source}))
except GgufbenchError as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    sys.exit(3)
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def hf_env(hub: FakeHub, home, **extra: str) -> dict[str, str]:
    """The environment of a rule script pointed at the loopback hub, with its own HF_HOME (cache, token)."""
    import os
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_")) and k not in ("PYTHONPATH",)}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=src,
               PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def drive(env: dict, timeout: float = 60, **args) -> Run:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args)], env=env, capture_output=True, text=True,
                       timeout=timeout, check=False)
    return Run(p.returncode, p.stdout, p.stderr)


def drive_background(env: dict, **args):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
