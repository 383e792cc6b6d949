"""Rule quantize_gguf: one rung of a local quant ladder (llama-quantize), or the model's source file as it is."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.sources.registry import make_quant

w, i = snakemake.wildcards, snakemake.input
make_quant(snakemake.params.origin, Path(i.source), Path(i.quantize), Path(snakemake.output.manifest), w.model, w.quant,
           snakemake.threads, snakemake.log[0])
