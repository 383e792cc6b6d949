"""Rule kld_combine: one quant's KLD over every shard, combined into one record (as rule kld writes it)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.shards.jobs import combine_job
from ggufbench.workflow.job import job_from_snakemake

w = snakemake.wildcards
combine_job(job_from_snakemake(snakemake), shards=list(snakemake.input.shards), plan=snakemake.input.plan,
            quant=w.quant, kv=w.kv, chunks=snakemake.params.chunks)
