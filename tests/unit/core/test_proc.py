"""A kill -9 of the process that runs a job ends the job and its tool (core.proc), with real processes: a
stand-in for Snakemake starts a job that runs a tool through run_tool and writes a partial file; the stand-in is
killed with SIGKILL, as `kill -9` of Snakemake does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.faults

JOB = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {src!r})
    from ggufbench.llamacpp.run import run_tool
    partial = Path({partial!r})
    partial.write_text("half a result")
    try:
        run_tool(["sleep", "600"], {log!r})
    finally:
        partial.unlink(missing_ok=True)
""")

# the stand-in for Snakemake: starts the job as a child, says their pids, waits
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    job = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(job.pid, flush=True)
    job.wait()
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()  # a zombie has ended


def _wait_for(cond, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _tool_pid(job: int) -> int | None:
    """The job's tool once it runs `sleep`: a child seen before its exec may not have set its death signal yet."""
    kids = Path(f"/proc/{job}/task/{job}/children")
    pids = kids.read_text().split() if kids.exists() else []
    try:
        return int(pids[0]) if pids and Path(f"/proc/{pids[0]}/cmdline").read_bytes().startswith(b"sleep") else None
    except OSError:
        return None


def test_kill_9_of_the_parent_ends_the_job_its_tool_and_its_partial_file(tmp_path):
    partial, log = tmp_path / ".out.partial", tmp_path / "job.log"
    job_src = JOB.format(src=str(REPO / "src"), partial=str(partial), log=str(log))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, job_src], stdout=subprocess.PIPE, text=True)
    job = int(parent.stdout.readline())
    assert _wait_for(lambda: _tool_pid(job) is not None), "the job did not start its tool"
    tool = _tool_pid(job)
    assert partial.exists() and _alive(tool)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_for(lambda: not _alive(job)), "the job ran on after its parent was killed"
    assert _wait_for(lambda: not _alive(tool)), "the tool ran on after its job ended"
    assert not partial.exists(), "the job's partial file was left behind"
    assert "$ sleep 600" in log.read_text()


def test_sigkill_of_the_job_itself_ends_its_tool(tmp_path):
    """Where the job cannot unwind (SIGKILL, the OOM killer), its tool still goes with it."""
    partial, log = tmp_path / ".out.partial", tmp_path / "job.log"
    job = subprocess.Popen([sys.executable, "-c", JOB.format(src=str(REPO / "src"), partial=str(partial),
                                                             log=str(log))])
    assert _wait_for(lambda: _tool_pid(job.pid) is not None)
    tool = _tool_pid(job.pid)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert _wait_for(lambda: not _alive(tool)), "the tool ran on after its job was killed"
