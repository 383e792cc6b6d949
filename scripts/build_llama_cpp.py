"""Rule build_llama_cpp: build (or reuse from the cache) llama.cpp for one configured build."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.core.cache import cache_dir
from ggufbench.core.io import write_json
from ggufbench.llamacpp.build import build_llama_cpp

record = build_llama_cpp(
    snakemake.wildcards.build,
    snakemake.params.spec,
    Path(snakemake.output.record).parent,
    jobs=snakemake.threads,
    log=snakemake.log[0],
    cache=cache_dir(snakemake.params.cache_dir),
)
write_json(snakemake.output.record, record)
