"""The machine-wide cache (GGUFBENCH_CACHE: downloaded sdists and wheels, llama.cpp builds), made safe to share:
a lock per entry, so two jobs that want the same entry never both make it nor remove one the other is reading,
and a record of every cached file's size and sha256 taken when it was cached, checked whenever it is reused, so
a truncated or damaged entry is made again instead of trusted forever.

The cache is not a single point of failure: what a job can check without it (a build's tools under results/, against
their build.json) never touches it, and a cache that cannot be written (read-only, another user's) is still read:
an entry found intact is used without its lock, every file checked as it is copied out. Only what must write it (a
download, a build, a repair from an entry that is gone) fails, with CacheNotWritable naming the folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError, ToolFailed
from .io import mismatch, remove_with_stamp, sha256_file, write_json

# What a folder we may not write answers: permissions (EACCES), an immutable or not-ours file (EPERM), a read-only
# mount (EROFS)
READ_ONLY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class CacheNotWritable(ConfigError):
    """The cache must be written (a download, a build, a repair from an entry it no longer holds) and cannot be."""


def cache_dir(configured: str | None = None) -> Path:
    """The cache's folder: the config's cache_dir, else $GGUFBENCH_CACHE, else ~/.cache/ggufbench."""
    d = configured or os.environ.get("GGUFBENCH_CACHE") or Path.home() / ".cache" / "ggufbench"
    return Path(d).expanduser()


@contextlib.contextmanager
def exclusive(lock: Path, read_only_ok: bool = False) -> Iterator[OSError | None]:
    """Hold an exclusive lock on `lock` (a file, created) for the block; waits while another process holds it.
    The kernel drops the lock when its holder dies, so a killed job never leaves it taken. Yields None once held.

    read_only_ok: where the lock cannot be made because its folder cannot be written (READ_ONLY errors: a read-only
    cache), yield that error instead of raising; the block then holds no lock and may only read, checking what it
    reads (no writer can be stopped from changing it meanwhile)."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        if not read_only_ok or e.errno not in READ_ONLY:
            raise
        yield e
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield None
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def not_writable(folder: Path, error: OSError, what: str) -> CacheNotWritable:
    """The error of a job that must write the cache and cannot: `what` says why it must write."""
    where = f": {error.filename}" if error.filename else ""
    return CacheNotWritable(f"{what}, and the cache folder {folder} cannot be written ({error.strerror}{where}). "
                            f"Make {folder} writable, or set GGUFBENCH_CACHE (or the config's cache_dir) to a "
                            "writable folder, then rerun")


def unwritable(folder: Path) -> OSError | None:
    """Why nothing can be written in folder (made if missing), a READ_ONLY error, or None: asked before running a
    tool that would write there and fail with a less plain message of its own (git)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        if e.errno not in READ_ONLY:
            raise
        return e
    return None


def fingerprint(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256.json")


def record_file(path: Path) -> None:
    """Note a cached file's size and sha256 as it is now (right after it was fetched whole)."""
    write_json(_sidecar(path), fingerprint(path))


def verify(path: Path, size: int, sha256: str) -> str | None:
    """io.mismatch for a cached file, also in a cache that cannot be written: there the stamp that spares the next
    check its hash cannot be written, so the file is hashed every time instead of the check failing."""
    try:
        return mismatch(path, size, sha256)
    except OSError as e:  # writing the stamp of a check that matched, or reading the file
        if e.errno not in READ_ONLY:
            raise
    try:
        got = sha256_file(path)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    return None if got == sha256 else f"has sha256 {got[:12]}, its record says {sha256[:12]}"


NO_RECORD = "has no record of what was cached"


def check_file(path: Path) -> str | None:
    """Why a cached file cannot be reused (missing, no record, size or sha256 not as recorded), or None. The
    sha256 is compared by io.mismatch: hashed again only when size or mtime moved since it last matched."""
    if not path.is_file():
        return "is missing"
    try:
        want = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return NO_RECORD
    return verify(path, want.get("size"), want.get("sha256"))


def drop_file(path: Path) -> None:
    remove_with_stamp(path)
    _sidecar(path).unlink(missing_ok=True)


def check_tree(folder: Path, recorded: dict[str, dict]) -> str | None:
    """Why a cached folder's files (relative name -> {size, sha256}) do not match their record, or None."""
    for name, want in recorded.items():
        why = verify(folder / name, want["size"], want["sha256"])
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
    recorded). One process at a time per requirement. In a download cache that cannot be written, an archive as it
    was cached is still used (read, no lock); only a download fails, naming the folder."""
    with exclusive(dl / f".{pattern.replace('*', '_')}.lock", read_only_ok=True) as refused:
        if refused is not None:
            for found in sorted(dl.glob(pattern)):
                why = check_file(found)
                if why is None or (why == NO_RECORD and _intact(found)):  # (recorded by the next writable run)
                    return found
            raise not_writable(dl, refused, f"{requirement} is not in the download cache as it was cached, so it "
                                            "must be downloaded")
        for found in sorted(dl.glob(pattern)):
            why = check_file(found)
            if why == NO_RECORD and _intact(found):
                record_file(found)  # cached before records were kept, and it reads whole: record it now
                why = None
            if why is None:
                return found
            note(log, f"{found} {why}: removed, downloading again")
            drop_file(found)
        return _pip_download(requirement, dl, pattern, binary, log)


def _pip_download(requirement: str, dl: Path, pattern: str, binary: bool, log: str | Path | None) -> Path:
    """pip download into a scratch folder (ours while the key's lock is held), moved in whole, then recorded."""
    import subprocess
    import sys

    scratch = dl / f".pip-{pattern.replace('*', '_')}"  # a killed run's goes here too
    shutil.rmtree(scratch, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(scratch),
           "--only-binary=:all:" if binary else "--no-binary=:all:", requirement]
    try:
        with open(log, "a") if log else contextlib.nullcontext() as out:
            if out:
                out.write(f"$ {' '.join(cmd)}\n")
                out.flush()
            proc = subprocess.run(cmd, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT, check=False)
        if proc.returncode < 0:
            raise ToolFailed(f"pip download of {requirement} was stopped by signal {-proc.returncode}; nothing was "
                             f"kept in {dl}; rerun to download it again")
        if proc.returncode:
            raise ToolFailed(f"pip download of {requirement} failed (exit status {proc.returncode}): see the log for "
                             "pip's reason (no network? no such version on the index?)")
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
