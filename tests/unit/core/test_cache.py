"""core.cache: the machine-wide cache shared by jobs and checkouts. The lock with real processes (one killed with
SIGKILL holding it), downloads with the real pip against a local find-links folder (PIP_NO_INDEX: offline),
damaged entries (truncated, changed, fetched before records were kept) fetched again, and a cache that cannot be
written (really read-only: see read_only) read without its locks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufbench.core.cache import (
    CacheNotWritable,
    check_file,
    exclusive,
    pypi_download,
    record_file,
    remove_stale_work,
    unwritable,
    verify,
)
from ggufbench.core.errors import ToolFailed

WHEEL = "demo_pkg-1.0-py3-none-any.whl"


def make_wheel(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("demo_pkg/__init__.py", "VALUE = 1\n" * 200)
        z.writestr("demo_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
        z.writestr("demo_pkg-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("demo_pkg-1.0.dist-info/RECORD", "")
    return path


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A find-links folder holding demo-pkg 1.0; pip sees nothing else."""
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links / WHEEL)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def fetch(tmp_path, log=None):
    return pypi_download("demo-pkg==1.0", tmp_path / "dl", "demo_pkg-1.0-*.whl", binary=True, log=log)


def test_a_download_is_recorded_and_reused_without_pip(index, tmp_path):
    log = tmp_path / "a.log"
    got = fetch(tmp_path, log)
    assert got == tmp_path / "dl" / WHEEL and check_file(got) is None
    assert "pip download" in log.read_text()
    again = tmp_path / "b.log"
    assert fetch(tmp_path, again) == got and not again.exists()  # reused: pip never ran
    assert sorted(p.name for p in (tmp_path / "dl").iterdir() if not p.name.endswith(".lock")) == [
        f".{WHEEL}.sha256.json", f".{WHEEL}.verified", WHEEL]  # the record, the last check's stamp; no scratch


@pytest.mark.faults
def test_a_truncated_cached_wheel_is_fetched_again_not_a_badzipfile_forever(index, tmp_path):
    """The issue's case: a truncated wheel in the download cache gave zipfile.BadZipFile on every run."""
    got = fetch(tmp_path)
    whole = got.read_bytes()
    got.write_bytes(whole[: len(whole) // 2])
    log = tmp_path / "rerun.log"
    assert fetch(tmp_path, log) == got and got.read_bytes() == whole
    text = log.read_text()
    assert f"{got} is {len(whole) // 2:,} bytes, its record says {len(whole):,}: removed, downloading again" in text


@pytest.mark.faults
def test_a_damaged_wheel_cached_before_records_were_kept_is_fetched_again(index, tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    whole = (index / WHEEL).read_bytes()
    (dl / WHEEL).write_bytes(whole[:-100])  # no record beside it, as an older ggufbench left its downloads
    log = tmp_path / "rerun.log"
    assert fetch(tmp_path, log).read_bytes() == whole
    assert "has no record of what was cached: removed, downloading again" in log.read_text()


def test_an_intact_wheel_cached_before_records_were_kept_is_recorded_and_kept(index, tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    make_wheel(dl / WHEEL)
    log = tmp_path / "a.log"
    assert check_file(fetch(tmp_path, log)) is None and not log.exists()


@pytest.mark.faults
def test_a_version_pip_cannot_find_says_so_and_leaves_nothing(index, tmp_path):
    with pytest.raises(ToolFailed, match=r"pip download of demo-pkg==2.0 failed \(exit status 1\): see the log"):
        pypi_download("demo-pkg==2.0", tmp_path / "dl", "demo_pkg-2.0-*.whl", binary=True, log=tmp_path / "l")
    assert [p.name for p in (tmp_path / "dl").iterdir() if not p.name.endswith(".lock")] == []


HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from pathlib import Path
from ggufbench.core.cache import exclusive
with exclusive(Path({lock!r})):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.faults
def test_the_lock_waits_for_its_holder_and_frees_when_the_holder_is_killed(tmp_path):
    """Two first builds of one key: the second waits on the key's lock. A holder killed with SIGKILL (a killed
    build) frees it at once: the kernel drops flock locks of a dead process."""
    from tests.support import REPO

    lock = tmp_path / ".key.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(src=str(REPO / "src"), lock=str(lock))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        import fcntl

        fd = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # taken: a second builder would wait here
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        t0 = time.monotonic()
        with exclusive(lock):
            assert time.monotonic() - t0 < 5
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.faults
def test_stale_work_folders_of_a_key_are_removed_and_others_kept(tmp_path):
    for name in ("k1.work-123", "k1.work-456", "k2.work-789", "k1"):
        (tmp_path / name / "bin").mkdir(parents=True)
    removed = remove_stale_work(tmp_path, "k1")
    assert [p.name for p in removed] == ["k1.work-123", "k1.work-456"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1", "k2.work-789"]


def test_a_recorded_file_that_changed_in_place_is_named(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"a" * 1000)
    record_file(f)
    f.write_bytes(b"b" * 1000)
    assert check_file(f).startswith("has sha256 ")


# A cache that cannot be written ---------------------------------------------------------------------------------

def _make_read_only(folder: Path):
    """(undo, how) after making folder and all under it read-only. chmod stops any user but root; root (these tests
    may run as root) needs a read-only bind mount of the folder on itself, else the immutable attribute."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if not p.is_symlink()}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)

        def restore():
            for p, mode in modes.items():
                p.chmod(mode)

        return restore, "chmod a-w"
    tried = []

    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError as e:
            return subprocess.CompletedProcess(cmd, 127, "", str(e))

    bind = run("mount", "--bind", str(folder), str(folder))
    if bind.returncode == 0:
        def umount():
            if run("umount", str(folder)).returncode:
                run("umount", "-l", str(folder))

        ro = run("mount", "-o", "remount,bind,ro", str(folder))
        if ro.returncode == 0:
            return umount, "a read-only bind mount"
        umount()
        tried.append(f"mount -o remount,bind,ro: {ro.stderr.strip()}")
    else:
        tried.append(f"mount --bind: {bind.stderr.strip()}")
    immutable = run("chattr", "-R", "+i", str(folder))
    if immutable.returncode == 0:
        return (lambda: run("chattr", "-R", "-i", str(folder))), "chattr +i"
    tried.append(f"chattr +i: {immutable.stderr.strip()}")
    pytest.skip("running as root, whom chmod does not stop, and no other way to make a folder read-only works here: "
                + "; ".join(tried))


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """folder (made if missing) really read-only for the block, for this process too; yields how it was done. A
    test that cannot have it is skipped, saying why."""
    folder.mkdir(parents=True, exist_ok=True)
    undo, how = _make_read_only(folder)
    try:
        probe = folder / ".write-probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"{folder} stayed writable after {how}")
        yield how
    finally:
        undo()


@pytest.mark.faults
def test_a_read_only_folder_yields_its_error_instead_of_a_lock(tmp_path):
    import errno

    lock = tmp_path / "cache/builds/.k1.lock"
    with read_only(tmp_path / "cache"):
        with pytest.raises(OSError):
            with exclusive(lock):
                pass
        with exclusive(lock, read_only_ok=True) as refused:
            assert refused.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        assert unwritable(tmp_path / "cache/builds") is not None
    assert not lock.exists() and not (tmp_path / "cache/builds").exists()
    with exclusive(lock, read_only_ok=True) as refused:
        assert refused is None and lock.exists()
    assert unwritable(tmp_path / "cache/builds") is None


@pytest.mark.faults
def test_a_cached_file_is_checked_in_a_read_only_cache_where_its_stamp_cannot_be_written(tmp_path):
    f = tmp_path / "cache/x.bin"
    f.parent.mkdir()
    f.write_bytes(b"a" * 1000)
    record_file(f)
    want = {"size": 1000, "sha256": hashlib.sha256(b"a" * 1000).hexdigest()}
    with read_only(tmp_path / "cache"):
        assert check_file(f) is None and verify(f, **want) is None  # hashed, not stamped
        assert not (tmp_path / "cache/.x.bin.verified").exists()
        assert verify(f, want["size"], "0" * 64).startswith("has sha256 ")


@pytest.mark.faults
def test_a_read_only_download_cache_gives_what_it_holds_without_pip_or_lock(index, tmp_path):
    got = fetch(tmp_path)
    (tmp_path / "dl/.demo_pkg-1.0-_.whl.lock").unlink()
    whole = got.read_bytes()
    log = tmp_path / "ro.log"
    with read_only(tmp_path / "dl"):
        assert fetch(tmp_path, log) == got and got.read_bytes() == whole
    assert not log.exists()  # pip never ran
    assert not (tmp_path / "dl/.demo_pkg-1.0-_.whl.lock").exists()


@pytest.mark.faults
@pytest.mark.parametrize("state", ["missing", "truncated"])
def test_a_download_a_read_only_cache_must_make_names_the_folder(index, tmp_path, state):
    got = fetch(tmp_path)
    if state == "missing":
        got.unlink()
    else:
        got.write_bytes(got.read_bytes()[:100])
    with read_only(tmp_path / "dl"):
        with pytest.raises(CacheNotWritable, match=rf"demo-pkg==1.0 is not in the download cache as it was cached, so "
                                                   rf"it must be downloaded, and the cache folder {tmp_path / 'dl'} "
                                                   r"cannot be written .*set GGUFBENCH_CACHE \(or the config's "
                                                   r"cache_dir\) to a writable folder"):
            fetch(tmp_path)
    assert fetch(tmp_path).read_bytes() == (index / WHEEL).read_bytes()  # writable again: downloaded
