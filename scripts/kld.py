"""Rule kld: one quant's KL divergence against the baseline logits."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.measure.quality import kld_job

i, p = snakemake.input, snakemake.params
tool = ensure_tool(i.build, "llama-perplexity", snakemake.log[0])  # not a rule input: see ensure_tool
kld_job(tool, i.build, i.manifest, i.base_record, i.logits, int(snakemake.wildcards.ctx), snakemake.wildcards.kv,
        snakemake.threads, p.run, p.gpu, snakemake.output.record, snakemake.log[0])
