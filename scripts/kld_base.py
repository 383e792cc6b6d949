"""Rule kld_base: the baseline quant's logits for KL divergence (forecast and checked before writing)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.quality import kld_base_job

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
kld_base_job(i.tool, i.build, i.manifest, i.corpus, i.corpus_record, int(w.ctx), w.kv, p.chunks,
             snakemake.config["kld"]["max_logits_gib"],
             snakemake.threads, p.run, p.gpu, snakemake.output.logits, snakemake.output.record, snakemake.log[0])
