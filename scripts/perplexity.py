"""Rule perplexity: one cell of the PPL matrix (build x model x quant x ctx x KV type)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.measure.quality import perplexity_job

i, w = snakemake.input, snakemake.wildcards
tool = ensure_tool(i.build, "llama-perplexity", snakemake.log[0])  # not a rule input: see ensure_tool
perplexity_job(tool, i.build, i.manifest, i.corpus, i.corpus_record, int(w.ctx), w.kv, snakemake.params.chunks,
               snakemake.threads, snakemake.params.run, snakemake.params.gpu, snakemake.output.record, snakemake.log[0])
