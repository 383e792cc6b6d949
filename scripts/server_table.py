"""Rule server_table: the server checks' records -> results/tables/server.parquet."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.report.tables import write_server_table

write_server_table(list(snakemake.input), snakemake.output.server)
