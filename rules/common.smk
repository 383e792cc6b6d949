# Config validation, path helpers (get_*), wildcard constraints. Logic lives in src/ggufbench.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow imports ggufbench from this checkout, with or without `pip install -e .` (rule scripts do
# the same from snakemake.scriptdir, so conda envs and cluster nodes need no install of it).
SRC = str(Path(workflow.basedir) / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from ggufbench.core import paths  # noqa: E402
from ggufbench.measure import runs as plan  # noqa: E402
from ggufbench.core.config import check_config, kv_pair, quantize_build, with_sections  # noqa: E402

with_sections(config)  # absent optional sections get their schema defaults too
validate(config, schema=str(Path(workflow.basedir) / "config" / "schema.yaml"))
check_config(config)

def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their repr, so a config whose keys
    were merely reordered must not look changed (and rerun builds and measurements)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


BUILDS = list(config["builds"])
MODELS = list(config["models"])
# perplexity: and kld: are optional (a speed-only study): without them their rules are never asked for
PPL = config.get("perplexity") or {}
KLD = config.get("kld") or {}
KLD_MODE = plan.kld_mode(config)
KLD_SHARDED = canonical(KLD.get("sharded") or {})
BENCH = canonical(config["bench"])
TUNER = canonical(config["tuner"])
GPU = canonical(config["gpu"])
SERVER = canonical(config["server"])
RUN = canonical(config["run"])


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


# --- builds -----------------------------------------------------------------------------------------


def get_build(build):
    return config["builds"][build]


def get_build_json(build):
    return paths.path(paths.BUILD_RECORD, build=build)


def is_gpu_build(build):
    return bool(get_build(build).get("cuda", False))


def get_gpu(wildcards):
    """GPU jobs ask for one GPU, so --resources gpu=1 serialises them and Slurm requests one."""
    return 1 if is_gpu_build(wildcards.build) else 0


def get_run(wildcards):
    """The `run:` section as this build's jobs use it: a CPU build ignores -ngl, so run.n_gpu_layers is not
    theirs (None in their records) and changing it reruns only the CUDA builds' jobs."""
    return RUN if is_gpu_build(wildcards.build) else {**RUN, "n_gpu_layers": None}


# bench: keys that only post-process the samples (read by the job from the config), and the strategies (each job
# gets its own through bench_strategy_spec): neither changes what llama-bench measures, so neither reruns it
BENCH_NOT_MEASURED = ("discard_first", "noise_threshold_pct", "strategies")


def get_bench_measured(wildcards):
    return {k: v for k, v in BENCH.items() if k not in BENCH_NOT_MEASURED}


def get_gpu_settings(wildcards):
    """The `gpu:` section for jobs of a CUDA build (the emulated free memory changes what they measure); nothing
    for a CPU build, whose measurements it cannot change."""
    return GPU if is_gpu_build(wildcards.build) else {}


def get_cache_dir():
    return config.get("cache_dir")


# --- models -----------------------------------------------------------------------------------------


def get_quant_origin(model, quant):
    return config["models"][model]["quants"][quant]


def get_manifest(model, quant):
    """Each origin has its own folder, so one rule makes each path."""
    return paths.manifest(model, quant, next(iter(get_quant_origin(model, quant))))


def get_quants(model):
    return list(config["models"][model]["quants"])


def get_baseline(model):
    return config["models"][model]["baseline"]


def get_source_gguf(model):
    return paths.path(paths.MODEL_SOURCE, model=model)


# --- data -------------------------------------------------------------------------------------------


def get_corpus(corpus):
    return paths.path(paths.CORPUS, corpus=corpus)


def get_corpus_json(corpus):
    return paths.path(paths.CORPUS_RECORD, corpus=corpus)


# --- result files -----------------------------------------------------------------------------------


def get_perplexity_results():
    """Each PPL cell's record: its own perplexity job, or the KLD/baseline run that measured the same thing."""
    return list(dict.fromkeys(run.path for _, run in plan.ppl_sources(config)))


def get_kld_results():
    return [run.path for run in plan.kld_runs(config) if run.kind == "kld"]


def get_kld_base_results():
    return [run.path for run in plan.kld_runs(config) if run.kind == "kld_base"]


def get_bench_strategies():
    """Offload strategies of the bench plan; without any, one that runs llama-bench as configured."""
    return BENCH.get("strategies") or {"default": {}}


def get_bench_results():
    return [
        paths.path(paths.BENCH, build=b, model=m, quant=q, strategy=s)
        for b in BUILDS
        for m in MODELS
        for q in get_quants(m)
        for s in get_bench_strategies()
    ]


# --- input functions (take wildcards) ---------------------------------------------------------------


def build_spec(wildcards):
    return canonical(get_build(wildcards.build))


def model_source_spec(wildcards):
    src = config["models"][wildcards.model]["source"]
    if "synthetic" in src:  # a vocab given by name is looked up in the quantize build's llama.cpp source tree
        build = config["builds"][quantize_build(config, wildcards.model)]
        src = {"synthetic": {**src["synthetic"], "llama_source": build["source"]}}
    return canonical(src)


def quant_origin(wildcards):
    return canonical(get_quant_origin(wildcards.model, wildcards.quant))


def quantize_inputs(wildcards):
    return {
        "source": get_source_gguf(wildcards.model),
        # the quantize build's record, not its llama-quantize (see run_inputs); ancient(): a rebuilt llama.cpp does
        # not re-make the quants (and so re-measure every build); re-quantize on purpose with --forcerun quantize_gguf
        "quantize_build": ancient(get_build_json(quantize_build(config, wildcards.model))),
    }


def corpus_spec(wildcards):
    return canonical(config["corpora"][wildcards.corpus])


def run_inputs(wildcards, corpus, quant=None):
    """What every llama.cpp measurement job reads: its build's record, the model, the corpus. The tool itself is
    not an input: a deleted binary would make Snakemake run the build job and then every job after it; the job
    finds its tool through the record and puts it back from the build cache if it must (build.ensure_tool)."""
    quant = quant or wildcards.quant
    inputs = {
        "build": get_build_json(wildcards.build),
        "manifest": get_manifest(wildcards.model, quant),
    }
    if corpus:
        inputs["corpus"] = get_corpus(corpus)
        inputs["corpus_record"] = get_corpus_json(corpus)
    return inputs


def perplexity_inputs(wildcards):
    return run_inputs(wildcards, PPL["corpus"])


def perplexity_chunks(wildcards):
    return plan.ppl_chunks(config, int(wildcards.ctx))


def kld_base_inputs(wildcards):
    return run_inputs(wildcards, KLD["corpus"], quant=get_baseline(wildcards.model))


def kld_inputs(wildcards):
    inputs = run_inputs(wildcards, KLD["corpus"])
    base = dict(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx, kv=plan.kld_base_kv(config))
    inputs.update(logits=paths.path(paths.KLD_BASE_LOGITS, **base), base_record=paths.path(paths.KLD_BASE, **base))
    return inputs


def kld_shard_plan_inputs(wildcards):
    return run_inputs(wildcards, KLD["corpus"], quant=get_baseline(wildcards.model))


def kld_shard_runs(wildcards):
    """The [quant, kv] KLD passes every shard of this build and model makes (the plan's KLD runs)."""
    return [[r.quant, r.kv] for r in plan.kld_runs(config)
            if r.kind == "kld" and (r.build, r.model) == (wildcards.build, wildcards.model)]


def kld_shard_quants(wildcards):
    return list(dict.fromkeys(q for q, _ in kld_shard_runs(wildcards)))


def kld_shard_inputs(wildcards):
    inputs = run_inputs(wildcards, KLD["corpus"], quant=get_baseline(wildcards.model))
    at = dict(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx)
    return {**inputs, "base_manifest": inputs.pop("manifest"), "plan": paths.path(paths.KLD_SHARD_PLAN, **at),
            "tokens": paths.path(paths.KLD_SHARD_TOKENS, **at),
            "manifests": [get_manifest(wildcards.model, q) for q in kld_shard_quants(wildcards)]}


def read_shard_plan(path):
    return json.loads(Path(path).read_text())["result"]


def kld_shard_disk_mb(wildcards, input):
    """The shard's logits file, exactly as forecast in the plan, in MB."""
    shard_bytes = read_shard_plan(input.plan)["shard_logits_bytes"][int(wildcards.shard)]
    return max(1, -(-shard_bytes // 1_000_000))


def get_kld_shard_records(wildcards):
    """Every shard's record, once checkpoint kld_shard_plan has said how many shards there are."""
    out = checkpoints.kld_shard_plan.get(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx).output
    n = read_shard_plan(out.plan)["n_shards"]
    at = dict(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx)
    return [paths.path(paths.KLD_SHARD, **at, shard=i) for i in range(n)]


def get_tune_results():
    """One tuner job per build x model x quant x VRAM budget x served context (when `tuner:` is configured)."""
    return [
        paths.path(paths.TUNE, build=b, model=m, quant=q, budget=budget, ctx=ctx)
        for b in BUILDS
        for m in MODELS
        for q in get_quants(m)
        for budget in TUNER["vram_budgets_gib"]
        for ctx in plan.serve_contexts(config)
    ]


def get_server_results():
    """One server check per build x model x VRAM budget x served context (server.check, with budgets)."""
    if not SERVER["check"]:
        return []
    from ggufbench.report.recommend import budgets_from_config

    return [
        paths.path(paths.SERVER, build=b, model=m, budget=gib, ctx=ctx)
        for b in BUILDS
        for m in MODELS
        for _, gib in budgets_from_config(config)
        for ctx in plan.serve_contexts(config)
    ]


def server_check_inputs(wildcards):
    """The server, and this build's and model's own records (not the tables: another build's results changing
    must not start this build's server checks again)."""
    mine = f"/{wildcards.build}/{wildcards.model}/"
    return {
        "build": get_build_json(wildcards.build),
        "manifests": [get_manifest(wildcards.model, q) for q in get_quants(wildcards.model)],
        **{name: [p for p in paths if mine in p] for name, paths in (
            ("perplexity", get_perplexity_results()), ("kld", get_kld_results()), ("bench", get_bench_results()),
            ("tune", get_tune_results()))},
    }


def model_quants(wildcards):
    """The model's quants, sorted: their order in the config is not part of what a server check measures."""
    return sorted(get_quants(wildcards.model))


def recommend_config(wildcards):
    """What the recommendation reads from the config (the baseline, the KV types): only this, so an unrelated
    config change does not start the server checks again."""
    return canonical({"models": {wildcards.model: {"baseline": get_baseline(wildcards.model)}},
                      "kld": {"base_kv": plan.kld_base_kv(config)}, "perplexity": {"kv": PPL.get("kv", [])}})


def bench_strategy_spec(wildcards):
    return get_bench_strategies()[wildcards.strategy]


def bench_inputs(wildcards):
    return run_inputs(wildcards, None)
