"""Rule llama_bench: llama-bench -o jsonl for one quant, with peak GPU memory sampled through NVML."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.measure.speed import bench_job

i, p = snakemake.input, snakemake.params
# what post-processes the samples comes from the config, not params: changing it re-summarises, not re-measures
plan = {**p.bench, **{k: snakemake.config["bench"][k] for k in ("discard_first", "noise_threshold_pct")}}
tool = ensure_tool(i.build, "llama-bench", snakemake.log[0])  # not a rule input: see ensure_tool
bench_job(tool, i.build, i.manifest, plan, snakemake.wildcards.strategy, p.spec, snakemake.threads, p.run,
          p.gpu, snakemake.output.record, snakemake.log[0])
