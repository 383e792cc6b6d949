"""workflow.job: job_from_snakemake makes one Job from a rule script's `snakemake` object (built here with
Snakemake's own Namedlist, as its script directive does): the build record read once, the tool found through it,
the run settings from the params, the outputs and only the declared config reads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from snakemake.iocontainers import Namedlist

from ggufbench.core.io import write_json
from ggufbench.workflow.job import job_from_snakemake


def named(**kw) -> Namedlist:
    return Namedlist(fromdict=kw)


def smk(tmp_path, rule: str, inputs: dict, params: dict, config: dict):
    return SimpleNamespace(rule=rule, config=config, log=[str(tmp_path / "job.log")], threads=3,
                           input=named(**inputs), output=named(record=str(tmp_path / "out.json")),
                           params=named(**params), wildcards=named(build="cpu", ctx="512"))


def test_a_job_without_a_build_takes_its_outputs_threads_and_declared_reads(tmp_path):
    config = {"hub_lock": "config/hub.lock.json", "kld": {"max_logits_gib": 9}}
    job = job_from_snakemake(smk(tmp_path, "download_gguf", {}, {"origin": {}}, config))
    assert job.rule == "download_gguf" and job.threads == 3 and job.log == tmp_path / "job.log"
    assert job.out == {"record": tmp_path / "out.json"} and job.wildcards == {"build": "cpu", "ctx": "512"}
    assert job.settings == {"hub_lock": "config/hub.lock.json"}  # what READS declares for the rule, nothing else
    assert job.build == {} and job.tool is None and job.run == {} and job.gpu == {}


def test_a_measuring_job_reads_its_build_record_once_and_finds_its_tool_through_it(tmp_path, monkeypatch):
    build = tmp_path / "results/builds/cpu/build.json"
    write_json(build, {"build": "cpu", "backend": "CPU", "key": "k"})
    asked = []

    def ensure_tool(build_json, name, log, cache):
        asked.append((Path(build_json), name, cache))
        return Path(build_json).parent / "bin" / name

    monkeypatch.setattr("ggufbench.workflow.job.ensure_tool", ensure_tool)
    monkeypatch.setenv("GGUFBENCH_CACHE", str(tmp_path / "cache"))
    run = {"flash_attn": "on", "n_gpu_layers": None}
    job = job_from_snakemake(smk(tmp_path, "kld_base", {"build": str(build)}, {"run": run, "gpu": {}},
                                 {"kld": {"max_logits_gib": 2}}), tool="llama-perplexity")
    assert job.build == {"build": "cpu", "backend": "CPU", "key": "k"} and not job.gpu_build
    assert job.tool == build.parent / "bin/llama-perplexity" and job.run == run
    assert asked == [(build, "llama-perplexity", tmp_path / "cache")]  # the cache named now, not at build time
    assert job.setting("kld.max_logits_gib") == 2
