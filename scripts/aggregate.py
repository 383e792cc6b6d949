"""Rule aggregate: every result record -> tidy Parquet tables with provenance columns."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.report.tables import now_of, write_tables
from ggufbench.workflow.job import job_from_snakemake

i = snakemake.input
job = job_from_snakemake(snakemake)
records = {name: list(i[name]) for name in ("perplexity", "kld", "bench", "tune", "tasks", "kv_cost", "builds")}
write_tables(records, job.out, bench_summary=snakemake.params.bench_summary,
             now=now_of(i.builds, i.manifests, i.corpora), task_baselines=snakemake.params.task_baselines)
