"""Running llama.cpp tools: output to the job's log as it comes, failures named (exit status, signal)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ToolFailed
from ..core.proc import end_with_parent, tool_preexec


@dataclass
class ToolRun:
    cmd: list[str]
    returncode: int
    output: str          # stdout and stderr together, as the tool printed them
    stdout: str          # stdout alone (llama-bench's JSONL goes here)
    wall_seconds: float


def run_tool(cmd: list[str], log_path: str | Path | None = None, env: dict | None = None,
             separate_stdout: bool = False) -> ToolRun:
    """Run cmd; stream its output into log_path as it comes; raise ToolFailed on a non-zero exit or a signal.

    separate_stdout keeps stdout apart from stderr (for tools whose stdout is data, like llama-bench's
    JSONL). Exit-0 failures are the parsers' business: they check the output for the lines a success prints.
    """
    cmd = [str(c) for c in cmd]
    log = open(log_path, "a", encoding="utf-8", buffering=1) if log_path else None  # noqa: SIM115
    merged: list[str] = []
    stdout: list[str] = []
    lock = threading.Lock()

    def pump(stream, into: list[str] | None) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            with lock:
                merged.append(line)
                if into is not None:
                    into.append(line)
                if log:
                    log.write(line)

    try:
        if log:
            log.write(f"$ {shlex.join(cmd)}\n")
        end_with_parent()  # a kill -9 of Snakemake ends this job, and so its tool (core.proc)
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE if separate_stdout else subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, preexec_fn=tool_preexec)
        except FileNotFoundError as e:
            raise ToolFailed(f"{cmd[0]} not found: was the build step run? ({e})") from e
        except PermissionError as e:
            raise ToolFailed(f"{cmd[0]} is not executable ({e})") from e
        readers = [threading.Thread(target=pump, args=(proc.stdout, stdout))]
        if separate_stdout:
            readers.append(threading.Thread(target=pump, args=(proc.stderr, None)))
        for t in readers:
            t.start()
        try:
            returncode = proc.wait()
        except BaseException:  # the job is being stopped (SIGTERM/SIGINT turned into an exception): the tool too
            proc.kill()
            proc.wait()
            raise
        for t in readers:
            t.join()
        wall = time.monotonic() - t0
        if log:
            log.write(f"# exit status {returncode}, {wall:.1f} s\n")
    finally:
        if log:
            log.close()
    out = "".join(merged)
    tool = Path(cmd[0]).name
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:  # real-time signals have no name
            sig = f"signal {-returncode}"
        hint = " (killed: out of memory?)" if returncode == -signal.SIGKILL else ""
        raise ToolFailed(f"{tool} was killed by {sig}{hint}; its output is in the log", out, returncode)
    if returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-5:])
        raise ToolFailed(f"{tool} exited with status {returncode}; last lines:\n{tail}", out, returncode)
    return ToolRun(cmd, returncode, out, "".join(stdout), wall)
