"""Rule quantize_gguf: one rung of a local quant ladder, made with llama-quantize from the model's source."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.models import quantize, write_manifest

w = snakemake.wildcards
qtype = snakemake.params.origin["quantize"]
manifest = Path(snakemake.output.manifest)
gguf = manifest.parent / f"{w.model}-{w.quant}.gguf"
quantize(Path(snakemake.input.quantize), Path(snakemake.input.source), gguf, qtype, snakemake.threads,
         snakemake.log[0])
write_manifest(manifest, w.model, w.quant, [gguf],
               {"kind": "quantize", "type": qtype, "from": snakemake.input.source, "tool": snakemake.input.quantize})
