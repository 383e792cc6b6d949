"""Rule quantize_gguf: one rung of a local quant ladder (llama-quantize), or the model's source file as it is."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.sources.registry import make_quant

w, i = snakemake.wildcards, snakemake.input
tool = ensure_tool(i.quantize_build, "llama-quantize", snakemake.log[0])  # not a rule input: see ensure_tool
make_quant(snakemake.params.origin, Path(i.source), tool, Path(snakemake.output.manifest), w.model, w.quant,
           snakemake.threads, snakemake.log[0])
