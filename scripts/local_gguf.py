"""Rule local_gguf: a GGUF already on disk, linked into results/ and checked against its sha256 if given."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from pathlib import Path

from ggufbench.sources.registry import link_local_gguf

w = snakemake.wildcards
link_local_gguf(snakemake.params.origin["local"], Path(snakemake.output.manifest), w.model, w.quant)
