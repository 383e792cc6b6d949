"""Rule server_check: the recommended llama-server command for one budget and context, started and proven."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.server_check import server_check_job
from ggufbench.report.proof import candidates
from ggufbench.report.tables import now_of
from ggufbench.sources.manifest import load_manifest
from ggufbench.workflow.job import job_from_snakemake

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
job = job_from_snakemake(snakemake, tool="llama-server")
manifests = {load_manifest(m)["quant"]: m for m in i.manifests}  # each manifest names its quant
assert sorted(manifests) == p.quants, (sorted(manifests), p.quants)
# the report ranks (from this build's and model's records), the job proves: two layers, two calls
ranked = candidates({name: list(i[name]) for name in ("perplexity", "kld", "bench", "tune")}, p.config,
                    model=w.model, build=job.build["build"], context=int(w.ctx), budget_gib=float(w.budget),
                    now=now_of([i.build], i.manifests))
server_check_job(job, **ranked, manifests=manifests, budget_gib=float(w.budget), context=int(w.ctx), server=p.server)
