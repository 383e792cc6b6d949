"""Rule kld_base_combine: the baseline's PPL over every shard, and the disk the shards used."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.shards.jobs import base_combine_job

base_combine_job(list(snakemake.input.shards), snakemake.input.plan, snakemake.params.chunks,
                 snakemake.output.record)
