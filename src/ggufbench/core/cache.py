"""The machine-wide cache (GGUFBENCH_CACHE: downloaded sdists and wheels, llama.cpp builds), made safe to share:
a lock per entry, so two jobs that want the same entry never both make it nor remove one the other is reading,
and a record of every cached file's size and sha256 taken when it was cached, checked whenever it is reused, so
a truncated or damaged entry is made again instead of trusted forever."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import ToolFailed
from .io import mismatch, remove_with_stamp, sha256_file, write_json


def cache_dir(configured: str | None = None) -> Path:
    """The cache's folder: the config's cache_dir, else $GGUFBENCH_CACHE, else ~/.cache/ggufbench."""
    d = configured or os.environ.get("GGUFBENCH_CACHE") or Path.home() / ".cache" / "ggufbench"
    return Path(d).expanduser()


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock` (a file, created) for the block; waits while another process holds it.
    The kernel drops the lock when its holder dies, so a killed job never leaves it taken."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def fingerprint(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256.json")


def record_file(path: Path) -> None:
    """Note a cached file's size and sha256 as it is now (right after it was fetched whole)."""
    write_json(_sidecar(path), fingerprint(path))


def check_file(path: Path) -> str | None:
    """Why a cached file cannot be reused (missing, no record, size or sha256 not as recorded), or None. The
    sha256 is compared by io.mismatch: hashed again only when size or mtime moved since it last matched."""
    if not path.is_file():
        return "is missing"
    try:
        want = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return "has no record of what was cached"
    return mismatch(path, want.get("size"), want.get("sha256"))


def drop_file(path: Path) -> None:
    remove_with_stamp(path)
    _sidecar(path).unlink(missing_ok=True)


def check_tree(folder: Path, recorded: dict[str, dict]) -> str | None:
    """Why a cached folder's files (relative name -> {size, sha256}) do not match their record, or None."""
    for name, want in recorded.items():
        why = mismatch(folder / name, want["size"], want["sha256"])
        if why is not None:
            return f"{name} {why}"
    return None


def remove_stale_work(parent: Path, key: str) -> list[Path]:
    """Scratch folders `<key>.work-<pid>` left by killed jobs. Call with the key's lock held: then no live job is
    working in any of them."""
    stale = sorted(parent.glob(f"{key}.work-*"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _intact(archive: Path) -> bool:
    """A zip or tar archive that reads to its end (a cache entry fetched before records were kept)."""
    import tarfile
    import zipfile

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                return z.testzip() is None
        with tarfile.open(archive) as t:
            for member in t:
                if member.isfile():
                    t.extractfile(member).read()
        return True
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError):
        return False


def pypi_download(requirement: str, dl: Path, pattern: str, binary: bool, log: str | Path | None = None) -> Path:
    """The archive of `requirement` (pkg==version) in the download cache dl, matching pattern: reused when it is
    as it was cached, else fetched again with pip download (into a scratch folder, moved in whole, then
    recorded). One process at a time per requirement."""
    import subprocess
    import sys

    dl.mkdir(parents=True, exist_ok=True)
    with exclusive(dl / f".{pattern.replace('*', '_')}.lock"):
        for found in sorted(dl.glob(pattern)):
            why = check_file(found)
            if why == "has no record of what was cached" and _intact(found):
                record_file(found)  # cached before records were kept, and it reads whole: record it now
                why = None
            if why is None:
                return found
            note(log, f"{found} {why}: removed, downloading again")
            drop_file(found)
        scratch = dl / f".pip-{pattern.replace('*', '_')}"  # ours while the lock is held; a killed run's goes here
        shutil.rmtree(scratch, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(scratch),
               "--only-binary=:all:" if binary else "--no-binary=:all:", requirement]
        try:
            with open(log, "a") if log else contextlib.nullcontext() as out:
                if out:
                    out.write(f"$ {' '.join(cmd)}\n")
                    out.flush()
                proc = subprocess.run(cmd, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                      check=False)
            if proc.returncode < 0:
                raise ToolFailed(f"pip download of {requirement} was stopped by signal {-proc.returncode}; nothing "
                                 f"was kept in {dl}; rerun to download it again")
            if proc.returncode:
                raise ToolFailed(f"pip download of {requirement} failed (exit status {proc.returncode}): see the "
                                 "log for pip's reason (no network? no such version on the index?)")
            got = sorted(scratch.glob(pattern))
            if not got:
                raise ToolFailed(f"pip download of {requirement} gave no file matching {pattern}")
            dest = dl / got[0].name
            got[0].replace(dest)
            record_file(dest)
            return dest
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def note(log: str | Path | None, line: str) -> None:
    """One '# ...' line in a job's log: what the cache did (removed, rebuilt) and why."""
    if log:
        with open(log, "a") as f:
            f.write(f"# {line}\n")
