"""A Job (core.job) as a rule script makes one, for tests that call a job function directly."""

from __future__ import annotations

from pathlib import Path

from ggufbench.core.io import read_json
from ggufbench.core.job import Job


def make_job(*, out: Path | dict, log: Path, tool: Path | None = None, build_json: Path | None = None,
             threads: int = 2, run: dict | None = None, gpu: dict | None = None, settings: dict | None = None,
             rule: str = "test", wildcards: dict | None = None) -> Job:
    """out: the job's record path, or its named outputs. The build record is read from build_json, as
    workflow.job.job_from_snakemake reads it."""
    outs = {"record": Path(out)} if not isinstance(out, dict) else {k: Path(v) for k, v in out.items()}
    return Job(rule=rule, wildcards=wildcards or {}, threads=threads, log=Path(log), out=outs,
               cache=Path(log).parent / "cache", build_json=Path(build_json) if build_json else None,
               build=read_json(build_json) if build_json else {}, tool=Path(tool) if tool else None,
               run=run or {}, gpu=gpu or {}, settings=settings or {})
