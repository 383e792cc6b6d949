"""Rule kv_cost: every KV type's cost against the reference KV type, one quant at one context (ggufbench-kvscore)."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.llamacpp.kvscore_output import SCORER
from ggufbench.measure.kv_cost import KvCostCells, kv_cost_job
from ggufbench.workflow.job import job_from_snakemake

i, w, c = snakemake.input, snakemake.wildcards, snakemake.params.cells
kv_cost_job(job_from_snakemake(snakemake, tool=SCORER), manifest=i.manifest, corpus=i.corpus,
            corpus_record=i.corpus_record,
            cells=KvCostCells(ctx=int(w.ctx), ref_kv=c["ref_kv"], kvs=tuple(c["kvs"]), chunks=c["chunks"],
                              bins=tuple(c["bins"]), batch=c["batch"]))
