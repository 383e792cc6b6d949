"""Rule fetch_model_source: the file a model's `quantize:` quants are made from."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.core.cache import cache_dir
from ggufbench.core.io import sha256_file, write_json
from ggufbench.sources.registry import fetch_model_source
from ggufbench.workflow.job import job_from_snakemake

job = job_from_snakemake(snakemake)
out = job.out["gguf"]
origin = fetch_model_source(snakemake.params.source, out, cache_dir(snakemake.params.cache_dir), job.log,
                            lock=job.setting("hub_lock"))
write_json(job.out["record"], {**origin, "sha256": sha256_file(out), "size": out.stat().st_size})
