"""Rule kld_shard: one shard's baseline pass and every quant's KLD pass, its logits only in local scratch."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.shards.jobs import ShardFiles, shard_job
from ggufbench.workflow.job import job_from_snakemake

i, p = snakemake.input, snakemake.params
files = ShardFiles(base_manifest=i.base_manifest, manifests=dict(zip(p.quants, i.manifests, strict=True)),
                   corpus=i.corpus, corpus_record=i.corpus_record, plan=i.plan, tokens=i.tokens)
shard_job(job_from_snakemake(snakemake, tool="llama-perplexity"), files=files, shard=int(snakemake.wildcards.shard),
          base_kv=p.base_kv, runs=p.runs, scratch_root=p.scratch_dir or snakemake.resources.tmpdir)
