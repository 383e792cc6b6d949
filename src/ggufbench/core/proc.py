"""A job's processes end with it. `kill -9` of Snakemake cannot be caught, and its jobs used to run on: a rerun
started straight away raced them on the same files, and a leftover GPU job skewed a concurrent benchmark
(issue 17). Linux's parent-death signal closes that: a job asks for SIGTERM when the Snakemake that started it
dies, SIGTERM unwinds the job as an exception (so it kills its tool and removes its partial files), and every
tool it starts gets SIGKILL when the job dies. Elsewhere (no prctl) nothing changes."""

from __future__ import annotations

import ctypes
import os
import signal
import threading

PR_SET_PDEATHSIG = 1
_tied = False


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send sig to this process when its parent dies. False where prctl is not there."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def tool_preexec() -> None:
    """preexec_fn for a job's tools: SIGKILL when the job dies. (The kernel's "parent" is the thread that
    started the tool, so tools are started from the job's main thread.)"""
    die_with_parent(signal.SIGKILL)


def unwind_on_sigterm() -> None:
    """SIGTERM (Snakemake stopping a job, Slurm's time limit, the parent-death signal) raises SystemExit, so
    the job's `finally` and `except` blocks run: its tool is killed, its partial outputs removed."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def end_with_parent() -> None:
    """This process gets SIGTERM, unwound as above, when its parent (the Snakemake that runs the job) dies. Called
    by whatever starts a tool; once per process, from the main thread only (signal handlers live there)."""
    global _tied
    if _tied or threading.current_thread() is not threading.main_thread():
        return
    parent = os.getppid()
    unwind_on_sigterm()
    if die_with_parent(signal.SIGTERM):
        _tied = True
        if os.getppid() != parent:  # the parent died before the kernel was asked
            os.kill(os.getpid(), signal.SIGTERM)
