"""Rule kld: one quant's KL divergence against the baseline logits."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.quality import kld_job
from ggufbench.workflow.job import job_from_snakemake

i, w = snakemake.input, snakemake.wildcards
kld_job(job_from_snakemake(snakemake, tool="llama-perplexity"), manifest=i.manifest, base_record=i.base_record,
        logits=i.logits, ctx=int(w.ctx), kv=w.kv)
