"""Rule summary_report: reports/summary.html, self-contained (tables inline, figures embedded)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.report.page import write_report

write_report(snakemake.input.tables, snakemake.input.figures, snakemake.output.html, snakemake.params.title,
             snakemake.params.config)
