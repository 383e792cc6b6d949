"""Rules task_score and task_noise_floor: one multiple-choice pass of a quant with a KV type over a task set (the
noise floor: the baseline cell again, with the batch sizes of params.variant)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.tasks import task_job
from ggufbench.workflow.job import job_from_snakemake

i, p = snakemake.input, snakemake.params
task_job(job_from_snakemake(snakemake, tool="llama-perplexity"), manifest=i.manifest, tasks=i.tasks,
         task_record=i.task_record, kv=snakemake.wildcards.kv, scoring=p.scoring,
         variant=p.variant if "variant" in p.keys() else None)
