"""Running llama.cpp tools: output to the job's log as it comes, failures named (exit status, signal).

One way to start a tool process, `started()`, used by run_tool (wait for the exit) and by the server check
(poll it while it runs, stop it): it writes the `$ cmd` line, ties the tool to the job (core.proc), streams its
output into the log and into memory, and whatever way the caller's block ends, stops the tool (SIGTERM, then
SIGKILL after a grace period) and reaps it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ToolFailed
from ..core.proc import end_with_parent, tool_preexec

STOP_GRACE_S = 10.0   # SIGTERM, then this long before SIGKILL
READER_JOIN_S = 5.0   # after a stop: a grandchild that kept the pipe open must not hang the job


@dataclass
class ToolRun:
    cmd: list[str]
    returncode: int
    output: str          # stdout and stderr together, as the tool printed them
    stdout: str          # stdout alone (llama-bench's JSONL goes here)
    wall_seconds: float


def last_lines(text: str, n: int = 5) -> str:
    """The last n lines of a tool's output, for an error message."""
    return "\n".join(text.strip().splitlines()[-n:])


class RunningTool:
    """A tool started by `started()`: its pid, its output so far, its exit. Made by started(), not directly."""

    def __init__(self, cmd: list[str], log, env: dict | None, separate_stdout: bool):
        self.cmd = cmd
        self.returncode: int | None = None
        self.wall_seconds = 0.0
        self._log = log
        self._merged: list[str] = []
        self._stdout: list[str] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE if separate_stdout else subprocess.STDOUT,
                                          env={**os.environ, **(env or {})}, preexec_fn=tool_preexec)
        except FileNotFoundError as e:
            raise ToolFailed(f"{cmd[0]} not found: was the build step run? ({e})") from e
        except PermissionError as e:
            raise ToolFailed(f"{cmd[0]} is not executable ({e})") from e
        self._readers = [threading.Thread(target=self._pump, args=(self._proc.stdout, self._stdout), daemon=True)]
        if separate_stdout:
            self._readers.append(threading.Thread(target=self._pump, args=(self._proc.stderr, None), daemon=True))
        for t in self._readers:
            t.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def name(self) -> str:
        return Path(self.cmd[0]).name

    def output(self) -> str:
        """stdout and stderr together, as printed so far (all of it once wait() or stop() returned)."""
        with self._lock:
            return "".join(self._merged)

    def stdout(self) -> str:
        with self._lock:
            return "".join(self._stdout)

    def note(self, line: str) -> None:
        """A line of the caller's own in the log (`# ...`), between the tool's lines."""
        with self._lock:
            if self._log:
                self._log.write(f"# {line}\n")

    def poll(self) -> int | None:
        """The exit status if it has exited (its output may still be arriving: wait() for all of it)."""
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit and for all of its output; subprocess.TimeoutExpired after timeout seconds."""
        rc = self._proc.wait(timeout)
        self._ended(rc, None)
        return rc

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, SIGKILL after grace_s, reap; the exit status (negative: the signal). Stopping an ended tool
        only reaps it."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        rc = self._proc.wait()
        self._ended(rc, READER_JOIN_S)
        return rc

    def _ended(self, rc: int, join_s: float | None) -> None:
        if self.returncode is None:
            self.wall_seconds = time.monotonic() - self._t0
        self.returncode = rc
        for t in self._readers:
            t.join(join_s)

    def _pump(self, stream, into: list[str] | None) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            with self._lock:
                self._merged.append(line)
                if into is not None:
                    into.append(line)
                if self._log:
                    self._log.write(line)
        stream.close()


@contextmanager
def started(cmd: list, log: str | Path | None = None, env: dict | None = None, separate_stdout: bool = False,
            grace_s: float = STOP_GRACE_S) -> Iterator[RunningTool]:
    """Start cmd (items str()-ed), its output appended to log as it comes; inside the block it runs; leaving the
    block, by any way, stops it (RunningTool.stop) and logs its exit. Raises ToolFailed if it cannot start.

    The tool gets SIGKILL when this job dies, and this job SIGTERM when Snakemake dies (core.proc): start tools
    from the main thread. env is added to this process's environment."""
    cmd = [str(c) for c in cmd]
    f = open(log, "a", encoding="utf-8", buffering=1) if log else None  # noqa: SIM115 - closed below
    try:
        if f:
            f.write(f"$ {shlex.join(cmd)}\n")
        end_with_parent()  # a kill -9 of Snakemake ends this job, and so its tool (core.proc)
        tool = RunningTool(cmd, f, env, separate_stdout)
        try:
            yield tool
        finally:
            stopped = tool.poll() is None
            rc = tool.stop(grace_s)
            tool.note(f"{'stopped: ' if stopped else ''}exit status {rc}, {tool.wall_seconds:.1f} s")
    finally:
        if f:
            f.close()


def _raise_for_status(tool: RunningTool) -> None:
    rc = tool.returncode
    if rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:  # real-time signals have no name
            sig = f"signal {-rc}"
        hint = " (killed: out of memory?)" if rc == -signal.SIGKILL else ""
        raise ToolFailed(f"{tool.name} was killed by {sig}{hint}; its output is in the log", tool.output(), rc)
    if rc != 0:
        raise ToolFailed(f"{tool.name} exited with status {rc}; last lines:\n{last_lines(tool.output())}",
                         tool.output(), rc)


def run_tool(cmd: list, log_path: str | Path | None = None, env: dict | None = None,
             separate_stdout: bool = False) -> ToolRun:
    """Run cmd; stream its output into log_path as it comes; raise ToolFailed on a non-zero exit or a signal.

    separate_stdout keeps stdout apart from stderr (for tools whose stdout is data, like llama-bench's
    JSONL). Exit-0 failures are the parsers' business: they check the output for the lines a success prints.
    """
    with started(cmd, log_path, env, separate_stdout) as tool:
        tool.wait()
    _raise_for_status(tool)
    return ToolRun(tool.cmd, tool.returncode, tool.output(), tool.stdout(), tool.wall_seconds)
