"""Rule tune_offload: the best --n-cpu-moe within one VRAM budget at one served context, found on measured VRAM."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.speed import tune_job
from ggufbench.workflow.job import job_from_snakemake

p, w = snakemake.params, snakemake.wildcards
tune_job(job_from_snakemake(snakemake, tool="llama-bench"), manifest=snakemake.input.manifest,
         budget_gib=float(w.budget), context=int(w.ctx), tuner=p.tuner, contexts=p.contexts)
