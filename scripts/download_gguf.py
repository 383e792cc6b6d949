"""Rule download_gguf: one quant's GGUF file(s) from the Hugging Face Hub, checked against the hub's sha256."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.hub import download_quant
from ggufbench.models import write_manifest

w = snakemake.wildcards
hub = snakemake.params.origin["hub"]
manifest = Path(snakemake.output.manifest)
files, origin = download_quant(hub["repo"], manifest.parent, quant=hub.get("quant"), filename=hub.get("file"),
                               revision=hub.get("revision", "main"))
write_manifest(manifest, w.model, w.quant, files, origin)
