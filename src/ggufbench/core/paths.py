"""Every results/ path, as a template: the rules' outputs, the input helpers of rules/common.smk, the plan's run
paths and the lock refresh all read them here. `{name}` fields are Snakemake wildcards; fill them with
path(TEMPLATE, field=value). Folders per source kind keep one rule per path."""

from __future__ import annotations

import math
import numbers
from decimal import Decimal

BUILD_RECORD = "results/builds/{build}/build.json"

MODEL_SOURCE = "results/models/{model}/source/model.gguf"
MODEL_SOURCE_RECORD = "results/models/{model}/source/source.json"
# a quant's folder by where it comes from (quantize: and source: are made by quantize_gguf)
QUANT_FOLDERS = {"quantize": "quantized", "source": "quantized", "hub": "hub", "local": "local"}
MANIFEST = "results/models/{model}/{folder}/{quant}/manifest.json"

CORPUS = "results/data/{corpus}/corpus.txt"
CORPUS_RECORD = "results/data/{corpus}/corpus.json"

PERPLEXITY = "results/perplexity/{build}/{model}/{quant}/ctx{ctx}_kv-{kv}.json"
KLD_BASE = "results/kld-base/{build}/{model}/ctx{ctx}_kv-{kv}.json"
KLD_BASE_LOGITS = "results/kld-base/{build}/{model}/ctx{ctx}_kv-{kv}.logits"
KLD = "results/kld/{build}/{model}/{quant}_ctx{ctx}_kv-{kv}.json"
KLD_SHARDS = "results/kld-shards/{build}/{model}/ctx{ctx}"
KLD_SHARD_PLAN = KLD_SHARDS + "/plan.json"
KLD_SHARD_TOKENS = KLD_SHARDS + "/tokens.json"
KLD_SHARD = KLD_SHARDS + "/shard-{shard}.json"
KV_COST = "results/kv-cost/{build}/{model}/{quant}/ctx{ctx}.json"  # every KV type of kv_cost.kv in one record

BENCH = "results/bench/{build}/{model}/{quant}/{strategy}.json"
TUNE = "results/tune/{build}/{model}/{quant}/vram-{budget}GiB_ctx{ctx}.json"
SERVER = "results/server/{build}/{model}/vram-{budget}GiB_ctx{ctx}.json"

# task sets (tasks.sets: made once, every build reads them) and the multiple-choice passes over them
TASK_SET = "results/tasks/sets/{taskset}/tasks.bin"
TASK_SET_RECORD = "results/tasks/sets/{taskset}/tasks.json"
TASKS = "results/tasks/{build}/{model}/{taskset}/{quant}_kv-{kv}.json"
TASKS_NOISE_FLOOR = "results/tasks/{build}/{model}/{taskset}/noise-floor/{quant}_kv-{kv}.json"

TABLE = "results/tables/{name}.parquet"
# what rule aggregate writes (server.parquet apart); kv_cost_positions: the position curve of the kv_cost records
TABLES = ("perplexity", "kld", "bench", "tune", "builds", "chunks", "tasks", "task_questions", "kv_cost",
          "kv_cost_positions")


def path(template: str, **fields) -> str:
    """A template with its fields filled (a budget in GiB as a plain decimal: 16, 2.5, 0.01; see budget)."""
    if "budget" in fields and not isinstance(fields["budget"], str):
        fields["budget"] = budget(fields["budget"])
    return template.format(**fields)


def budget(gib: float) -> str:
    """A budget as it is in paths and the rules' `budget` wildcard ([0-9]+(.[0-9]+)?): the shortest decimal that
    reads back as the same float (so float() of the wildcard is the configured budget), never with an exponent
    (`:g` printed 1e-05 and rounded 15.1234567 to 15.1235), no trailing zeros (16.0 is 16)."""
    if isinstance(gib, bool) or not isinstance(gib, numbers.Real) or not math.isfinite(gib) or gib < 0:
        raise ValueError(f"a VRAM budget is a finite number of GiB, 0 or more; got {gib!r}")
    return format(Decimal(repr(float(gib))).normalize(), "f")  # repr: the shortest digits that read back the same


def manifest(model: str, quant: str, origin_kind: str) -> str:
    return path(MANIFEST, model=model, folder=QUANT_FOLDERS[origin_kind], quant=quant)


def table(name: str) -> str:
    return path(TABLE, name=name)
