"""Rule llama_bench: llama-bench -o jsonl for one quant, with peak GPU memory sampled through NVML."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.speed import bench_job
from ggufbench.workflow.job import job_from_snakemake

p = snakemake.params
bench_job(job_from_snakemake(snakemake, tool="llama-bench"), manifest=snakemake.input.manifest, bench=p.bench,
          strategy=snakemake.wildcards.strategy, spec=p.spec)
