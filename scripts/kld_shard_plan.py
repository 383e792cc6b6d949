"""Checkpoint kld_shard_plan: tokenize the corpus once and size the shards from the exact logits forecast."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.shards.jobs import shard_plan_job
from ggufbench.workflow.job import job_from_snakemake

i, p = snakemake.input, snakemake.params
shard_plan_job(job_from_snakemake(snakemake, tool="llama-tokenize"), manifest=i.manifest, corpus=i.corpus,
               corpus_record=i.corpus_record, ctx=int(snakemake.wildcards.ctx), chunks=p.chunks, sharded=p.sharded)
