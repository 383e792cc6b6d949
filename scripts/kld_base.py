"""Rule kld_base: the baseline quant's logits for KL divergence (forecast and checked before writing)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.quality import kld_base_job
from ggufbench.workflow.job import job_from_snakemake

i, w = snakemake.input, snakemake.wildcards
kld_base_job(job_from_snakemake(snakemake, tool="llama-perplexity"), manifest=i.manifest, corpus=i.corpus,
             corpus_record=i.corpus_record, ctx=int(w.ctx), kv=w.kv, chunks=snakemake.params.chunks)
