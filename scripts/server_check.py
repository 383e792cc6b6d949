"""Rule server_check: the recommended llama-server command for one budget and context, started and proven."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.report.proof import server_check_job
from ggufbench.sources.manifest import load_manifest

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
records = {name: list(i[name]) for name in ("perplexity", "kld", "bench", "tune")}
manifests = {load_manifest(m)["quant"]: m for m in i.manifests}  # each manifest names its quant
assert sorted(manifests) == p.quants, (sorted(manifests), p.quants)
tool = ensure_tool(i.build, "llama-server", snakemake.log[0])  # not a rule input: see ensure_tool
server_check_job(tool, i.build, records, manifests, p.config, w.model, float(w.budget), int(w.ctx), p.server, p.run,
                 snakemake.output.record, snakemake.log[0])
