"""Helpers to run the real Snakemake workflow from tests (in a temporary working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, configfile: str | Path | None = None, timeout: int = 3600,
              check: bool = True, max_file_bytes: int | None = None,
              snakefile: Path = REPO / "Snakefile") -> subprocess.CompletedProcess:
    """max_file_bytes: RLIMIT_FSIZE for snakemake and its jobs, a real write failure (EFBIG, "File too large")
    for any file written past it, as a full disk gives ENOSPC. snakefile: another checkout's (a fresh clone)."""
    cmd = [*SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir)]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    cmd += list(args)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    limit = None
    if max_file_bytes is not None:
        import resource

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False,
                          preexec_fn=limit)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n"
                             f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    try:
        start = lines.index("Job stats:")
    except ValueError:
        return counts
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts
