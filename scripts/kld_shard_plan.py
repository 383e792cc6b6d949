"""Checkpoint kld_shard_plan: tokenize the corpus once and size the shards from the exact logits forecast."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.measure.shards.jobs import shard_plan_job

i, p, o = snakemake.input, snakemake.params, snakemake.output
tool = ensure_tool(i.build, "llama-tokenize", snakemake.log[0])  # not a rule input: see ensure_tool
shard_plan_job(tool, i.build, i.manifest, i.corpus, i.corpus_record, int(snakemake.wildcards.ctx), p.chunks,
               p.sharded, o.plan, o.tokens, snakemake.log[0])
