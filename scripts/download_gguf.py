"""Rule download_gguf: one quant's GGUF file(s) from the Hugging Face Hub, pinned and checked against its sha256.

The files live in the Hugging Face cache (HF_HUB_CACHE / HF_HOME, shared with other tools and checkouts);
the quant's folder gets links to them and the manifest. With `hub_lock` in the config the commit comes from
the lock file (and a first fetch records it there).
"""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.sources.hub import download_quant
from ggufbench.sources.manifest import write_manifest
from ggufbench.workflow.job import job_from_snakemake

job = job_from_snakemake(snakemake)
hub = snakemake.params.origin["hub"]
manifest = job.out["manifest"]
files, origin = download_quant(hub["repo"], manifest.parent, quant=hub.get("quant"), filename=hub.get("file"),
                               revision=hub.get("revision", "main"), lock=job.setting("hub_lock"))
write_manifest(manifest, job.wildcards["model"], job.wildcards["quant"], files, origin)
