"""Rule kld_base_combine: the baseline's PPL over every shard, and the disk the shards used."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.shards.jobs import base_combine_job
from ggufbench.workflow.job import job_from_snakemake

base_combine_job(job_from_snakemake(snakemake), shards=list(snakemake.input.shards), plan=snakemake.input.plan,
                 chunks=snakemake.params.chunks)
