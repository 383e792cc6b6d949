# ggufbench: which GGUF quant, KV-cache type and offload setting to run on your GPU, measured with llama.cpp.
#   snakemake --cores 2 reports/summary.html                               # the offline demo (default)
#   snakemake --cores 8 reports/summary.html --configfile config/config.yaml   # the real study
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The demo is the embedded default; a --configfile replaces it rather than merging into it.
if not config:

    configfile: Path(workflow.basedir) / "config" / "demo.yaml"


include: "rules/common.smk"
include: "rules/build.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/perplexity.smk"


# kld.mode picks how the baseline logits are kept: one file for kld.chunks chunks, or shards in bounded disk
if KLD_MODE == "sharded":

    include: "rules/kld_sharded.smk"

else:

    include: "rules/kld.smk"


include: "rules/tasks.smk"
include: "rules/kv_cost.smk"
include: "rules/bench.smk"
include: "rules/report.smk"
include: "rules/server.smk"


rule all:
    default_target: True
    input:
        "reports/summary.html",


# Light jobs run where snakemake runs, not as cluster jobs (a Slurm job would cost more than they do); the
# corpus and model-source fetches also need the network, which compute nodes often lack.
localrules:
    make_corpus,
    make_task_set,
    fetch_model_source,
    aggregate,
    server_table,
    figures,
    summary_report,
