"""Rule make_corpus: write one evaluation corpus and its record (source, size, sha256)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.core.io import write_json
from ggufbench.sources.corpus import make_corpus
from ggufbench.workflow.job import job_from_snakemake

job = job_from_snakemake(snakemake)
info = make_corpus(job.wildcards["corpus"], snakemake.params.spec, job.out["text"], lock=job.setting("hub_lock"))
write_json(job.out["record"], info.to_dict())
