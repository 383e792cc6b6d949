"""Rule kld_base: the baseline quant's logits for KL divergence (forecast and checked before writing)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.measure.quality import kld_base_job

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
tool = ensure_tool(i.build, "llama-perplexity", snakemake.log[0])  # not a rule input: see ensure_tool
kld_base_job(tool, i.build, i.manifest, i.corpus, i.corpus_record, int(w.ctx), w.kv, p.chunks,
             snakemake.config["kld"]["max_logits_gib"],
             snakemake.threads, p.run, p.gpu, snakemake.output.logits, snakemake.output.record, snakemake.log[0])
