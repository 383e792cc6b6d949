"""Rule figures: one PNG per question, from the Parquet tables."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.report.figures import make_figures

make_figures(dict(snakemake.input.items()), dict(snakemake.output.items()))
