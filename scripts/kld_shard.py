"""Rule kld_shard: one shard's baseline pass and every quant's KLD pass, its logits only in local scratch."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.measure.shards.jobs import shard_job

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
tool = ensure_tool(i.build, "llama-perplexity", snakemake.log[0])  # not a rule input: see ensure_tool
shard_job(tool, i.build, i.base_manifest, dict(zip(p.quants, i.manifests, strict=True)), i.corpus, i.corpus_record,
          i.plan, i.tokens, int(w.shard), p.base_kv, p.runs, snakemake.threads, p.run, p.gpu,
          p.scratch_dir or snakemake.resources.tmpdir, f"{w.build}/{w.model}/ctx{w.ctx}", snakemake.output.record,
          snakemake.log[0])
