"""Rule build_llama_cpp: build (or reuse from the cache) llama.cpp for one configured build."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.core.cache import cache_dir
from ggufbench.core.io import write_json
from ggufbench.llamacpp.build import build_llama_cpp
from ggufbench.workflow.job import job_from_snakemake

job = job_from_snakemake(snakemake)
record = build_llama_cpp(job.wildcards["build"], snakemake.params.spec, job.out["record"].parent, jobs=job.threads,
                         log=job.log, cache=cache_dir(snakemake.params.cache_dir))
write_json(job.out["record"], record)
