"""Rule aggregate: every result record -> tidy Parquet tables with provenance columns."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.report.tables import write_tables

i, o = snakemake.input, snakemake.output
write_tables(perplexity=i.perplexity, kld=i.kld, bench=i.bench, tune=i.tune, builds=i.builds,
             out={"perplexity": o.perplexity, "kld": o.kld, "bench": o.bench, "tune": o.tune, "builds": o.builds,
                  "chunks": o.chunks}, bench_summary=snakemake.params.bench_summary)
