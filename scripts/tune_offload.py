"""Rule tune_offload: the best --n-cpu-moe within one VRAM budget at one served context, found on measured VRAM."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.build import ensure_tool
from ggufbench.measure.speed import tune_job

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
tool = ensure_tool(i.build, "llama-bench", snakemake.log[0])  # not a rule input: see ensure_tool
tune_job(tool, i.build, i.manifest, float(w.budget), int(w.ctx), p.tuner, p.contexts, snakemake.threads, p.run,
         snakemake.output.record, snakemake.log[0])
