"""Rule quantize_gguf: one rung of a local quant ladder (llama-quantize), or the model's source file as it is."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from pathlib import Path

from ggufbench.sources.registry import make_quant
from ggufbench.workflow.job import job_from_snakemake

w = snakemake.wildcards
make_quant(job_from_snakemake(snakemake, tool="llama-quantize"), origin=snakemake.params.origin,
           source=Path(snakemake.input.source), model=w.model, quant=w.quant)
