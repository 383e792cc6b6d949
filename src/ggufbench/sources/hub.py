"""Hugging Face Hub: pick a quant's files in a GGUF repo and fetch them pinned, verified and resumable.

Quant names are matched as whole tokens of the file name or of a quant subfolder, so Q4_K_M never matches
UD-Q4_K_M and Q4_K_XL never matches UD-Q4_K_XL; split files (-00001-of-00003) are taken together.

What huggingface_hub does for us and what this module adds (docs/hub.md says more):
- huggingface_hub: the HTTP API (repo listing with LFS metadata, HEAD/GET on /resolve), tokens (HF_TOKEN or
  the stored login), HF_ENDPOINT, HF_HUB_OFFLINE, the shared cache layout (blobs named by their sha256,
  snapshots per commit), in-process retries with Range, a size check.
- here: the revision resolved once to a commit and every file fetched at that commit; quant selection; the
  sha256 of every byte checked against the hub's LFS sha256 (a mismatch removes the file); downloads that
  resume across processes (a `.partial` next to the blob, renamed only once verified); the disk preflight;
  log-friendly progress in human units; the lock file (ggufbench.lockfile); clear errors for gated repos
  and offline misses that never print the token.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..core.errors import ConfigError, ToolFailed
from ..core.io import sha256_file, symlink
from .hub_select import select_file, select_quant_files

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

PROGRESS_EVERY_S = 10.0  # a progress line in the log at most this often per file (and one at the end)


# --- small helpers ------------------------------------------------------------------------------------

def human_bytes(n: float) -> str:
    """1536 -> '1.50 KiB'; binary units, as `du -h` and llama.cpp's model-size lines."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def say(msg: str) -> None:
    """One line in the job's log (rule scripts send stderr there)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the hub lists as blobId / ETag for files not stored in LFS)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class LogProgress:
    """Progress for huggingface_hub's http_get in log lines: '<file>: 1.20 GiB of 3.40 GiB (35%), 45.6 MiB/s'.

    A tqdm bar writes carriage returns, which make one unreadable line in a log file.
    """

    def __init__(self, *_, desc: str = "", total: int | None = None, initial: int = 0, **__):
        self.desc, self.total, self.n = desc, total, initial or 0
        self._start_n, self._t0 = self.n, time.monotonic()
        self._last = self._t0
        if self.n:
            say(f"{self.desc}: resuming at {human_bytes(self.n)}" + (f" of {human_bytes(total)}" if total else ""))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def line(self) -> str:
        dt = max(time.monotonic() - self._t0, 1e-6)
        rate = human_bytes((self.n - self._start_n) / dt)
        if self.total:
            return (f"{self.desc}: {human_bytes(self.n)} of {human_bytes(self.total)} "
                    f"({100 * self.n / self.total:.0f}%), {rate}/s")
        return f"{self.desc}: {human_bytes(self.n)}, {rate}/s"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            say(self.line())

    def close(self) -> None:
        if self._last is not None:
            say(self.line())
            self._last = None

    def refresh(self, *_, **__) -> None:
        pass

    def set_description(self, desc=None, *_, **__) -> None:
        self.desc = desc or self.desc


# --- what the hub lists -------------------------------------------------------------------------------

@dataclass
class HubFile:
    path: str
    size: int | None
    sha256: str | None  # LFS sha256; None for a file kept in git (then blob_id is its git object id)
    blob_id: str | None = None


@dataclass
class Resolved:
    repo: str
    repo_type: str
    revision: str
    commit: str
    files: list[HubFile]
    live: bool = False  # the revision was resolved on the hub just now (not from the lock or the cache)

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    def lock_entry(self) -> dict:
        return {"repo": self.repo, "repo_type": self.repo_type, "revision": self.revision, "commit": self.commit,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256 or None, "blob_id": f.blob_id}
                          for f in self.files]}


def offline() -> bool:
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE).expanduser()


def _storage(repo: str, repo_type: str, cache_dir: str | Path | None) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache(cache_dir) / repo_folder_name(repo_id=repo, repo_type=repo_type)


def _auth_hint(repo: str, repo_type: str) -> str:
    from huggingface_hub import get_token

    page = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo}"
    # says whether a token exists, never what it is
    held = ("a token was sent (HF_TOKEN or the stored login) but the hub refused it: check that it can read "
            "this repo and that its account accepted the conditions" if get_token() else
            "no token was found: set HF_TOKEN or run `hf auth login`")
    return f"accept the repo's conditions at {page} while logged in, then give a token; {held}"


def _hub_error(err: Exception, repo: str, repo_type: str, revision: str) -> Exception:
    """huggingface_hub's errors, said in the workflow's terms (never with the token)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return ConfigError(f"{repo} is a gated repo and the hub refused the download (HTTP "
                           f"{err.response.status_code}): {_auth_hint(repo, repo_type)}")
    if isinstance(err, RepositoryNotFoundError):
        return ConfigError(f"{repo_type} repo {repo!r} was not found, or it is private or gated: check the name; "
                           f"{_auth_hint(repo, repo_type)}")
    if isinstance(err, RevisionNotFoundError):
        return ConfigError(f"{repo} has no revision {revision!r} (branch, tag or commit); if it is a locked "
                           "commit that was deleted upstream, refresh the lock (python -m ggufbench.lockfile refresh)")
    if isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code in (401, 403):
        return ConfigError(f"{repo}: the hub answered HTTP {err.response.status_code}; {_auth_hint(repo, repo_type)}")
    return ToolFailed(f"{repo}@{revision}: the hub request failed: {type(err).__name__}: {err}")


def list_repo(repo: str, revision: str = "main", repo_type: str = "model") -> tuple[str, dict[str, HubFile]]:
    """The commit a revision points at now and every file there with size and LFS sha256 (one API call)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi().repo_info(repo, revision=revision, repo_type=repo_type, files_metadata=True)
    except HfHubHTTPError as e:
        raise _hub_error(e, repo, repo_type, revision) from None
    if not info.sha or not _COMMIT.match(info.sha):
        raise ToolFailed(f"{repo}@{revision}: the hub did not say which commit this is (sha={info.sha!r})")
    files = {s.rfilename: HubFile(s.rfilename, s.lfs.size if s.lfs else s.size, s.lfs.sha256 if s.lfs else None,
                                  s.blob_id) for s in info.siblings or []}
    return info.sha, files


def _cached_listing(repo: str, repo_type: str, revision: str, cache_dir) -> tuple[str, dict[str, HubFile]]:
    """Offline: the commit a revision pointed at when it was last fetched, and the files cached for it.

    Cached blobs of LFS files are named by their sha256 (the hub's ETag), so that is what they are checked
    against.
    """
    storage = _storage(repo, repo_type, cache_dir)
    commit = revision if _COMMIT.match(revision) else None
    ref = storage / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    snap = storage / "snapshots" / (commit or "")
    if not commit or not snap.is_dir():
        raise ConfigError(f"HF_HUB_OFFLINE is set and {repo}@{revision} is not in the Hugging Face cache "
                          f"({hub_cache(cache_dir)}): fetch it once online (or unset HF_HUB_OFFLINE)")
    files = {}
    for p in sorted(snap.rglob("*")):
        if p.is_file():
            blob = Path(os.readlink(p)).name if p.is_symlink() else ""
            rel = p.relative_to(snap).as_posix()
            files[rel] = HubFile(rel, p.stat().st_size, blob if _SHA256.match(blob) else None,
                                 blob if re.fullmatch(r"[0-9a-f]{40}", blob) else None)
    return commit, files


def resolve(repo: str, revision: str = "main", *, quant: str | None = None, filename: str | None = None,
            repo_type: str = "model", pin: dict | None = None, cache_dir=None,
            select=None) -> Resolved:
    """Which commit and which files: the lock's pin if there is one, else the revision as the hub has it now.

    `select(paths) -> wanted paths` overrides quant/filename selection (datasets use it).
    """
    if select is None:
        def select(paths):
            if filename:
                return select_file(paths, filename, repo)
            return select_quant_files(paths, quant or "", repo)

    if pin and offline():
        files = [HubFile(f["path"], f.get("size"), f.get("sha256"), f.get("blob_id")) for f in pin["files"]]
        return Resolved(repo, repo_type, revision, pin["commit"], files)
    if offline():
        commit, listing = _cached_listing(repo, repo_type, revision, cache_dir)
    else:
        commit, listing = list_repo(repo, pin["commit"] if pin else revision, repo_type)
    try:
        wanted = select(sorted(listing))
    except ConfigError as e:
        if not offline():
            raise
        # the cache holds only what was fetched, so "not found" means "not cached" here
        raise ConfigError(f"HF_HUB_OFFLINE is set and the selection is not in the Hugging Face cache "
                          f"({hub_cache(cache_dir)}) for {repo}@{commit}: {e} (cached); fetch it once online (or "
                          "unset HF_HUB_OFFLINE)") from None
    files = [listing[p] for p in wanted]
    live = not offline() and not pin
    if pin:
        locked = {f["path"]: f.get("sha256") or f.get("blob_id") for f in pin["files"]}
        now = {f.path: f.sha256 or f.blob_id for f in files}
        if locked != now:
            raise ToolFailed(f"{repo}@{pin['commit']}: the lock lists {locked} but the hub lists {now} at the same "
                             "commit; the lock file was edited by hand or is for another selection: refresh it")
    return Resolved(repo, repo_type, revision, commit, files, live)


# --- fetching -----------------------------------------------------------------------------------------

def _verify(path: Path, f: HubFile, where: str) -> str:
    """Check a file's bytes against the hub's sha256 (or git object id); return its sha256."""
    got = sha256_file(path)
    if f.sha256:
        if got != f.sha256:
            raise _Corrupt(f"{where}: sha256 {got} does not match the hub's {f.sha256}")
    elif f.blob_id:
        oid = git_blob_sha1(path)
        if oid != f.blob_id:
            raise _Corrupt(f"{where}: git object id {oid} does not match the hub's {f.blob_id}")
    else:
        raise ToolFailed(f"{where}: the hub gave no sha256 or object id for this file, so it cannot be checked")
    if f.size is not None and path.stat().st_size != f.size:
        raise _Corrupt(f"{where}: {path.stat().st_size} bytes, the hub says {f.size}")
    return got


class _Corrupt(ToolFailed):
    pass


def _remove_cached(pointer: Path) -> None:
    """Drop a bad file from the cache: the blob and the snapshot link that names it."""
    blob = pointer.resolve()
    blob.unlink(missing_ok=True)
    pointer.unlink(missing_ok=True)


def _clean_orphans(blobs: Path, etag: str) -> None:
    """huggingface_hub's `<etag>.<random>.incomplete` files of killed processes: never resumed, only in the way.

    Called while holding the same per-file lock huggingface_hub takes, so no live download owns them.
    """
    for p in blobs.glob(f"{etag}.*.incomplete"):
        say(f"removing {p.name} ({human_bytes(p.stat().st_size)}) left by an interrupted download")
        p.unlink(missing_ok=True)


def preflight_disk(res: Resolved, cache_dir=None) -> None:
    """Refuse before any byte moves when what is still missing does not fit on the cache's disk."""
    storage = _storage(res.repo, res.repo_type, cache_dir)
    need = 0
    missing = []
    for f in res.files:
        if _cached_pointer(res, f, cache_dir) is not None:
            continue
        have = 0
        partial = storage / "blobs" / f"{f.sha256}.partial" if f.sha256 else None
        if partial is not None and partial.is_file():
            have = partial.stat().st_size
        need += max((f.size or 0) - have, 0)
        missing.append(f.path)
    if not need:
        return
    probe = storage
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ToolFailed(f"not enough disk space for {res.repo}@{res.commit[:12]} {missing}: need "
                         f"{human_bytes(need)} ({need} bytes) in {storage}, only {human_bytes(free)} ({free} bytes) "
                         "free there; free space or point HF_HUB_CACHE (or HF_HOME) at a larger disk")
    say(f"disk: {human_bytes(need)} to download into {hub_cache(cache_dir)}, {human_bytes(free)} free")


def _cached_pointer(res: Resolved, f: HubFile, cache_dir) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(res.repo, f.path, cache_dir=str(hub_cache(cache_dir)), revision=res.commit,
                                 repo_type=res.repo_type)
    return Path(hit) if isinstance(hit, str) else None


def _download_blob(res: Resolved, f: HubFile, cache_dir) -> None:
    """Put the verified blob of one LFS file into the cache, resuming a `.partial` left by an earlier run.

    huggingface_hub (1.18+) writes to a fresh random-named temporary file per process and deletes it on
    failure, so a killed multi-GB download starts from zero. Here the partial file has a stable name, so
    the next run asks for the rest with a Range request; it is renamed to the blob only after its sha256
    matches the hub's.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    storage = _storage(res.repo, res.repo_type, cache_dir)
    blobs = storage / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(res.repo, f.path, repo_type=res.repo_type, revision=res.commit)
    headers = build_hf_headers()
    meta = get_hf_file_metadata(url, headers=dict(headers))
    if meta.etag != f.sha256:
        raise ToolFailed(f"{res.repo}/{f.path}@{res.commit}: the hub's ETag {meta.etag} is not the listed sha256 "
                         f"{f.sha256}")
    location = meta.location
    if location != url:
        from urllib.parse import urlsplit

        if urlsplit(location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # signed CDN URL: the token stays with the hub
    lock = hub_cache(cache_dir) / ".locks" / repo_folder_name(repo_id=res.repo, repo_type=res.repo_type) / \
        f"{f.sha256}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    blob = blobs / f.sha256
    partial = blobs / f"{f.sha256}.partial"
    with WeakFileLock(lock):
        if blob.is_file():
            return
        _clean_orphans(blobs, f.sha256)
        for attempt in (1, 2):
            have = partial.stat().st_size if partial.is_file() else 0
            if f.size is not None and have > f.size:
                partial.unlink()
                have = 0
            with open(partial, "r+b" if have else "wb") as out:
                out.seek(have)
                http_get(location, out, resume_size=have, headers=headers, expected_size=f.size,
                         displayed_filename=f.path, tqdm_class=LogProgress)
            try:
                _verify(partial, f, f"{res.repo}/{f.path}@{res.commit[:12]}")
            except _Corrupt as e:
                partial.unlink(missing_ok=True)
                if attempt == 1 and have:
                    say(f"{e}; the resumed part was bad, downloading the whole file again")
                    continue
                raise ToolFailed(f"{e}; the downloaded file was removed. Rerun to download it again; if it fails "
                                 "again the hub's copy or the network is at fault") from None
            break
        partial.replace(blob)


def fetch(res: Resolved, cache_dir=None) -> list[Path]:
    """Every file of `res` in the Hugging Face cache, each checked against the hub's sha256; their paths."""
    from huggingface_hub import hf_hub_download

    paths = []
    if not offline():
        preflight_disk(res, cache_dir)
    for f in res.files:
        where = f"{res.repo}/{f.path}@{res.commit[:12]}"
        pointer = _cached_pointer(res, f, cache_dir)
        if pointer is None and offline():
            missing = [g.path for g in res.files if _cached_pointer(res, g, cache_dir) is None]
            raise ConfigError(f"HF_HUB_OFFLINE is set and {len(missing)} file(s) of {res.repo}@{res.commit} are not "
                              f"in the Hugging Face cache ({hub_cache(cache_dir)}): {missing}; fetch them once "
                              "online (or unset HF_HUB_OFFLINE)")
        if pointer is None:
            say(f"downloading {where} ({human_bytes(f.size or 0)})")
            try:
                if f.sha256:
                    _download_blob(res, f, cache_dir)  # then hf_hub_download only links it into the snapshot
                pointer = Path(hf_hub_download(res.repo, f.path, repo_type=res.repo_type, revision=res.commit,
                                               cache_dir=str(hub_cache(cache_dir)), tqdm_class=LogProgress))
            except Exception as e:  # noqa: BLE001 - said in the workflow's terms below
                from huggingface_hub.errors import HfHubHTTPError

                if isinstance(e, HfHubHTTPError):
                    raise _hub_error(e, res.repo, res.repo_type, res.commit) from None
                raise
        else:
            say(f"{where}: in the cache, checking its sha256")
        try:
            _verify(pointer, f, where)
        except _Corrupt as e:
            _remove_cached(pointer)
            raise ToolFailed(f"{e}; the file was removed from the cache ({pointer}). Rerun to download it again"
                             ) from None
        say(f"{where}: sha256 ok")
        paths.append(pointer)
    if res.live and res.revision != res.commit:
        # what huggingface_hub records when it resolves a branch itself: offline runs find the commit by it
        ref = _storage(res.repo, res.repo_type, cache_dir) / "refs" / res.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(res.commit)
    return paths


def download_quant(repo: str, dest: Path, quant: str | None = None, filename: str | None = None,
                   revision: str = "main", *, lock: str | Path | None = None, cache_dir=None,
                   repo_type: str = "model") -> tuple[list[Path], dict]:
    """One quant's file(s), verified, linked into dest from the Hugging Face cache; (links, origin).

    With `lock` (a lock file path) the commit recorded there is used, and a new selection is added to it.
    """
    from . import hub_lock

    dest = Path(dest)
    key = hub_lock.quant_key(repo, revision, quant=quant, filename=filename, repo_type=repo_type)
    pin = hub_lock.read(lock).get(key) if lock else None
    res = resolve(repo, revision, quant=quant, filename=filename, repo_type=repo_type, pin=pin, cache_dir=cache_dir)
    say(f"{repo}@{revision} -> commit {res.commit}" + (" (from the lock file)" if pin else "") +
        f": {len(res.files)} file(s), {human_bytes(res.total_size)}")
    cached = fetch(res, cache_dir)
    links = []
    for f, path in zip(res.files, cached, strict=True):
        link = dest / PurePosixPath(f.path).name
        symlink(path.absolute(), link)
        links.append(link)
    if lock and not pin:
        hub_lock.put(lock, key, res.lock_entry())
        say(f"recorded {key} -> {res.commit} in {lock}")
    origin = {"kind": "hub", "repo": repo, "revision": revision, "commit": res.commit,
              "files": [f.path for f in res.files], "hub_sha256": [f.sha256 for f in res.files],
              "locked": bool(pin)}
    return links, origin
