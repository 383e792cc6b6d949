"""Rule kld_combine: one quant's KLD over every shard, combined into one record (as rule kld writes it)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.shards.jobs import combine_job

w = snakemake.wildcards
combine_job(list(snakemake.input.shards), snakemake.input.plan, w.quant, w.kv, snakemake.params.chunks,
            snakemake.output.record)
