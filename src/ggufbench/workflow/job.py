"""The one way a rule script becomes a job: job_from_snakemake(snakemake) -> core.job.Job.

It reads the build's record once, finds the llama.cpp tool the job runs as that build made it (putting it back
from the build cache if it went missing: llamacpp.build.ensure_tool), and takes from the config only the values
workflow/deps.py READS declares for the rule as read without being measured."""

from __future__ import annotations

from pathlib import Path

from ..core.cache import cache_dir
from ..core.io import read_json
from ..core.job import Job
from ..core.proc import unwind_on_sigterm
from ..llamacpp.build import ensure_tool
from .deps import settings


def job_from_snakemake(smk, tool: str | None = None) -> Job:
    """smk: the `snakemake` object of a rule script. tool: the llama.cpp tool the job runs (found through the
    build record of its input `build`). The rule's params `run` and `gpu`, where it has them, are the settings
    it measures with."""
    unwind_on_sigterm()  # SIGTERM (Snakemake or Slurm stopping the job) unwinds: partial files removed
    config = smk.config
    log = Path(smk.log[0])
    build_json = Path(smk.input.build) if "build" in smk.input.keys() else None
    build = read_json(build_json) if build_json is not None else {}
    cache = cache_dir(config.get("cache_dir"))
    params = smk.params
    return Job(
        rule=smk.rule,
        wildcards=dict(smk.wildcards.items()),
        threads=int(smk.threads),
        log=log,
        out={k: Path(v) for k, v in smk.output.items()},
        cache=cache,
        build_json=build_json,
        build=build,
        tool=ensure_tool(build_json, tool, log, cache) if tool else None,
        run=dict(params.run) if "run" in params.keys() else {},
        gpu=dict(params.gpu) if "gpu" in params.keys() else {},
        settings=settings(config, smk.rule),
    )
