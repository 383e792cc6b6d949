# Config validation, wildcard constraints, and the rules' input and params functions: thin get_* wrappers over
# ggufbench.workflow.deps, where what each job depends on is declared and tested (tests/unit/workflow/test_deps.py).
import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow imports ggufbench from this checkout, with or without `pip install -e .` (rule scripts do
# the same from snakemake.scriptdir, so conda envs and cluster nodes need no install of it).
SRC = str(Path(workflow.basedir) / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from ggufbench.core import paths  # noqa: E402
from ggufbench.core.config import GGML_MAX_N_THREADS, check_config, with_sections  # noqa: E402
from ggufbench.sources.registry import quant_kind  # noqa: E402
from ggufbench.workflow.deps import Deps  # noqa: E402
from ggufbench.workflow.made import repair as repair_made_outputs  # noqa: E402

with_sections(config)  # absent optional sections get their schema defaults too
validate(config, schema=str(Path(workflow.basedir) / "config" / "schema.yaml"))
check_config(config)

DEPS = Deps(config)
BUILDS = DEPS.builds
KLD = DEPS.kld
KLD_MODE = DEPS.kld_mode
KLD_SHARDED = DEPS.kld_sharded
BENCH = DEPS.bench
TUNER = DEPS.tuner
SERVER = DEPS.server


wildcard_constraints:
    build="[A-Za-z0-9._+-]+",
    model="[A-Za-z0-9._+-]+",
    quant="[A-Za-z0-9._+-]+",
    corpus="[A-Za-z0-9._+-]+",
    kv="[a-z0-9_]+(-[a-z0-9_]+)?",
    ctx="[0-9]+",
    strategy="[A-Za-z0-9._+-]+",
    budget="[0-9]+(\\.[0-9]+)?",
    shard="[0-9]+",
    taskset="[A-Za-z0-9._+-]+",


def tool_threads(cores):
    """A job that takes the machine's cores gives llama.cpp at most GGML_MAX_N_THREADS of them (-t above it is
    refused by ggml: --cores 1024 would have asked for 1024)."""
    return min(cores, GGML_MAX_N_THREADS)


def quant_manifest(kind):
    """The manifest path of a quant kind, in its folder (sources/registry.py QUANT_KINDS)."""
    return paths.path(paths.MANIFEST, model="{model}", folder=quant_kind(kind).folder, quant="{quant}")


# --- params -----------------------------------------------------------------------------------------
get_gpu = DEPS.gpu_count
get_run = DEPS.run_settings
get_gpu_settings = DEPS.gpu_settings
get_bench_measured = DEPS.bench_measured
get_cache_dir = DEPS.cache_dir
build_spec = DEPS.build_spec
model_source_spec = DEPS.model_source_spec
quant_origin = DEPS.quant_origin_spec
corpus_spec = DEPS.corpus_spec
perplexity_chunks = DEPS.perplexity_chunks
kv_cost_cells = DEPS.kv_cost_cells
kld_shard_runs = DEPS.kld_shard_runs
kld_shard_quants = DEPS.kld_shard_quants
kld_shard_disk_mb = DEPS.kld_shard_disk_mb
bench_strategy_spec = DEPS.bench_strategy_spec
model_quants = DEPS.model_quants
recommend_config = DEPS.recommend_config
task_set_spec = DEPS.task_set_spec
task_scoring = DEPS.task_scoring
task_noise_floor = DEPS.task_noise_floor

# --- inputs -----------------------------------------------------------------------------------------
perplexity_inputs = DEPS.perplexity_inputs
kld_base_inputs = DEPS.kld_base_inputs
kld_inputs = DEPS.kld_inputs
kv_cost_inputs = DEPS.kv_cost_inputs
kld_shard_plan_inputs = DEPS.kld_shard_plan_inputs
kld_shard_inputs = DEPS.kld_shard_inputs
bench_inputs = DEPS.bench_inputs
server_check_inputs = DEPS.server_check_inputs
task_set_inputs = DEPS.task_set_inputs
task_score_inputs = DEPS.task_score_inputs
get_build_json = DEPS.build_json


def quantize_inputs(wildcards):
    """ancient(): a rebuilt llama.cpp does not re-make the quants (and so re-measure every build); re-quantize on
    purpose with --forcerun quantize_gguf."""
    inputs = DEPS.quantize_inputs(wildcards)
    return {**inputs, "build": ancient(inputs["build"])}


def get_kld_shard_records(wildcards):
    """Every shard's record, once checkpoint kld_shard_plan has said how many shards there are."""
    out = checkpoints.kld_shard_plan.get(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx).output
    return DEPS.kld_shard_records(wildcards, out.plan)


# --- result files -----------------------------------------------------------------------------------
get_perplexity_results = DEPS.perplexity_results
get_kld_results = DEPS.kld_results
get_kv_cost_results = DEPS.kv_cost_results
get_bench_results = DEPS.bench_results
get_tune_results = DEPS.tune_results
get_server_results = DEPS.server_results
get_task_results = DEPS.task_results
get_task_noise_floor_results = DEPS.task_noise_floor_results


# Tables, figures and the page that are cut short, of another kind, or made from a table that is gone: removed
# before the DAG is built, so this run makes them again (workflow/made.py; Snakemake alone says "Nothing to be done")
for note in repair_made_outputs():
    print(f"ggufbench: {note}", file=sys.stderr)
