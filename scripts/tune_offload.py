"""Rule tune_offload: the best --n-cpu-moe within one VRAM budget, found on measured VRAM."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.jobs import tune_job

i, p = snakemake.input, snakemake.params
tune_job(i.tool, i.build, i.manifest, float(snakemake.wildcards.budget), p.tuner, snakemake.threads, p.run,
         snakemake.output.record, snakemake.log[0])
