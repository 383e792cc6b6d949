"""A job's context: what a rule gives the job it runs, as one object.

Every rule script builds one Job from `snakemake` (ggufbench.workflow.job.job_from_snakemake) and calls its job
with it plus keyword arguments for what only that job reads (its model, corpus, context, KV type). The Job holds
what every job has: the rule and its wildcards, the threads, the log, the named outputs; for the jobs that run
llama.cpp, the build's record (read once) and the tool as that build made it; the `run:` and `gpu:` settings as
this build's jobs measure with them; and the config values the job reads without them being part of what it
measures (a disk guard, how samples are summarised, where a cache lives: workflow/deps.py READS says which).

Adding a job: a rule (rules/*.smk) whose params come from workflow/deps.py, a script that calls
job_from_snakemake and one function of the package with the Job and keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: dict[str, str]
    threads: int
    log: Path
    out: dict[str, Path]
    cache: Path                           # the machine's cache (core.cache.cache_dir): where, not what
    build_json: Path | None = None        # the build's record, for the jobs that run llama.cpp
    build: dict = field(default_factory=dict)
    tool: Path | None = None              # the llama.cpp tool the job runs, as its build made it
    run: dict = field(default_factory=dict)
    gpu: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # config values read without being measured (deps.READS)

    @property
    def gpu_build(self) -> bool:
        return self.build.get("backend") == "CUDA"

    def setting(self, key: str):
        """A config value this rule reads without it being part of what it measures (workflow/deps.py READS)."""
        try:
            return self.settings[key]
        except KeyError:
            raise ConfigError(f"rule {self.rule} reads {key!r} from the config, but workflow/deps.py READS does not "
                              "declare it for this rule (declare it, and say whether a change to it must rerun "
                              "the job)") from None

    def note(self, line: str) -> None:
        """One '# ...' line in the job's log."""
        with open(self.log, "a") as f:
            f.write(f"# {line}\n")
