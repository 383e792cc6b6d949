"""What each job depends on: its input files, its params, and every config value it reads, in one place.

rules/*.smk take their input and params functions from here (rules/common.smk binds them to the config as thin
get_* wrappers); the rule scripts take the config values their jobs read without measuring them through
READS (workflow/job.py). A params value is what a job measures with: Snakemake reruns the job when it changes.
So a value goes into params only if changing it changes the measurement; a disk guard, how stored samples are
summarised, or where a cache lives is read from the config and declared here as not measured.

READS is this project's KEY_PROPERTIES (llama.cpp's scripts/compare-llama-bench.py lists the properties that
identify a result): per rule, each config key its jobs read and what a change to it does.

Adding a job: its rule in rules/<stage>.smk, its input/params functions here (with a test in
tests/unit/workflow/test_deps.py) and its config reads in READS.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from pathlib import Path

from ..core import paths
from ..core.config import quantize_build
from ..measure import runs
from ..sources.registry import local_content, quant_kind

# What a change to a config value read by a job does.
MEASURED = "measured"    # in the job's params: a change reruns the job (and what depends on it)
GUARD = "guard"          # checked before the job measures: a change measures nothing anew
SUMMARY = "summary"      # how stored samples are summarised: a change re-summarises (the aggregate), re-measures none
LOCATION = "location"    # where a cache or lock file lives: a change moves files, measures nothing anew
EFFECTS = {MEASURED: "reruns the job", GUARD: "measures nothing anew (checked before measuring)",
           SUMMARY: "re-summarises the stored samples, measures nothing anew",
           LOCATION: "moves files, measures nothing anew"}

# bench: keys that only post-process the samples, and the strategies (each job gets its own, bench_strategy_spec)
BENCH_NOT_MEASURED = ("discard_first", "noise_threshold_pct", "strategies")
_RUN = {"run": MEASURED, "gpu": MEASURED}

READS: dict[str, dict[str, str]] = {
    "build_llama_cpp": {"builds.{build}": MEASURED, "cache_dir": MEASURED},
    "fetch_model_source": {"models.{model}.source": MEASURED, "cache_dir": MEASURED, "hub_lock": LOCATION},
    "quantize_gguf": {"models.{model}.quants.{quant}": MEASURED},
    "download_gguf": {"models.{model}.quants.{quant}": MEASURED, "hub_lock": LOCATION},
    "local_gguf": {"models.{model}.quants.{quant}": MEASURED},
    "make_corpus": {"corpora.{corpus}": MEASURED, "hub_lock": LOCATION},
    "perplexity": {"perplexity.chunks": MEASURED, "perplexity.chunks_by_ctx": MEASURED, **_RUN},
    "kld_base": {"kld.chunks": MEASURED, "kld.max_logits_gib": GUARD, **_RUN},
    "kld": {**_RUN},
    "kv_cost": {**{f"kv_cost.{k}": MEASURED for k in ("kv", "ref_kv", "chunks", "chunks_by_ctx", "bins", "batch")},
                **_RUN},
    "kld_shard_plan": {"kld.chunks": MEASURED, "kld.sharded": MEASURED},
    "kld_shard": {"kld.base_kv": MEASURED, "kld.kv": MEASURED, "kld.sharded.scratch_dir": MEASURED, **_RUN},
    "kld_combine": {"kld.chunks": MEASURED},
    "kld_base_combine": {"kld.chunks": MEASURED},
    "llama_bench": {**{f"bench.{k}": MEASURED for k in ("prompt", "gen", "repetitions", "depth", "contexts", "kv",
                                                        "batch", "ubatch", "threads", "extra_args")},
                    "bench.strategies.{strategy}": MEASURED, "bench.discard_first": SUMMARY,
                    "bench.noise_threshold_pct": SUMMARY, **_RUN},
    "tune_offload": {"tuner": MEASURED, "bench.contexts": MEASURED, "run": MEASURED},
    "server_check": {"server": MEASURED, "run": MEASURED, "models.{model}.baseline": MEASURED,
                     "kld.base_kv": MEASURED, "perplexity.kv": MEASURED},
    "make_task_set": {"tasks.sets.{taskset}": MEASURED, "hub_lock": LOCATION},
    "task_score": {"tasks.ctx": MEASURED, "tasks.batch": MEASURED, "tasks.ubatch": MEASURED, **_RUN},
    "task_noise_floor": {"tasks.ctx": MEASURED, "tasks.batch": MEASURED, "tasks.ubatch": MEASURED,
                         "tasks.noise_floor": MEASURED, **_RUN},
    "aggregate": {"bench.discard_first": MEASURED, "bench.noise_threshold_pct": MEASURED,
                  "models.{model}.baseline": MEASURED, "tasks.base_kv": MEASURED},
    "summary_report": {"report": MEASURED, "*": MEASURED},
}


# What a code change reruns (docs/reliability.md): the rules that turn records into tables, figures and the page
# rerun when the code they run changes (their params hold a hash of it: seconds of work); a measurement never reruns
# for a code change (hours of GPU on the study: profiles/default leaves Snakemake's `code` trigger out, which would
# rerun every job whose script is newer than its output, as after a fresh clone). A change that alters what a
# measurement means is rerun on purpose: snakemake --forcerun <rule>.
PACKAGE = Path(__file__).resolve().parents[1]


@cache
def _imports(module: str) -> frozenset[str]:
    """The ggufbench modules one module imports (relative imports resolved; inside functions too)."""
    path = _module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n.startswith("ggufbench") and _module_file(n, must=False)}
    return frozenset(found)


def _module_file(module: str, must: bool = True) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for p in (PACKAGE / rel / "__init__.py", (PACKAGE / rel).with_suffix(".py")):
        if p.is_file():
            return p
    if must:
        raise FileNotFoundError(f"no module {module} under {PACKAGE}")
    return None


@cache
def code_version(*modules: str) -> str:
    """A hash of the code the modules run: their files and every ggufbench module they import, transitively, and
    the package's data files (the report's templates). A params value of the rules that only post-process."""
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += _imports(m)
    files = sorted({_module_file(m) for m in seen} | set((PACKAGE / "report" / "templates").iterdir()))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(PACKAGE).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


# The rules that rerun when their code changes, and the module each one's script calls.
POST_PROCESSING = {"aggregate": "ggufbench.report.tables", "server_table": "ggufbench.report.tables",
                   "figures": "ggufbench.report.figures", "summary_report": "ggufbench.report.page"}


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their repr, so a config whose keys
    were merely reordered must not look changed (and rerun builds and measurements)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def config_value(config: dict, key: str):
    """config["a"]["b"] for "a.b" (None where a part is absent)."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def settings(config: dict, rule: str) -> dict:
    """The config values a rule's jobs read without measuring them (READS: not MEASURED), for its Job."""
    return {key: config_value(config, key) for key, effect in READS.get(rule, {}).items()
            if effect != MEASURED and "{" not in key}


def with_content(spec: dict) -> dict:
    """A source spec as a param: a `local:` file's spec carries what the file holds now (registry.local_content:
    size and sha256, hashed again only when size or mtime moved), so one replaced in place reruns the job that links
    or reads it and exactly the cells measured from it, and one only touched reruns nothing; other kinds' specs are
    as configured."""
    if "local" not in spec:
        return spec
    return {**spec, "local": {**spec["local"], "content": local_content(spec["local"]["path"])}}


def read_shard_plan(path) -> dict:
    return json.loads(Path(path).read_text())["result"]


class Deps:
    """The input and params functions of every rule, for one config (rules/common.smk makes one)."""

    def __init__(self, config: dict):
        self.config = config
        self.builds = list(config["builds"])
        self.models = list(config["models"])
        # perplexity: and kld: are optional (a speed-only study): without them their rules are never asked for
        self.ppl = config.get("perplexity") or {}
        self.kld = config.get("kld") or {}
        self.kld_mode = runs.kld_mode(config)
        self.kld_base_kv = runs.kld_base_kv(config)
        self.kld_sharded = canonical(self.kld.get("sharded") or {})
        self.kv_cost = config.get("kv_cost") or {}
        self.bench = canonical(config["bench"])
        self.tuner = canonical(config["tuner"])
        self.gpu = canonical(config["gpu"])
        self.server = canonical(config["server"])
        self.run = canonical(config["run"])
        self.tasks = canonical(config.get("tasks") or {})  # optional: without it no task rule is asked for

    # --- builds ---------------------------------------------------------------------------------------

    def build(self, build: str) -> dict:
        return self.config["builds"][build]

    @staticmethod
    def build_json(build: str) -> str:
        return paths.path(paths.BUILD_RECORD, build=build)

    def is_gpu_build(self, build: str) -> bool:
        return bool(self.build(build).get("cuda", False))

    def gpu_count(self, wildcards) -> int:
        """GPU jobs ask for one GPU, so --resources gpu=1 serialises them and Slurm requests one."""
        return 1 if self.is_gpu_build(wildcards.build) else 0

    def run_settings(self, wildcards) -> dict:
        """The `run:` section as this build's jobs use it: a CPU build ignores -ngl, so run.n_gpu_layers is not
        theirs (None in their records) and changing it reruns only the CUDA builds' jobs."""
        return self.run if self.is_gpu_build(wildcards.build) else {**self.run, "n_gpu_layers": None}

    def bench_measured(self, wildcards) -> dict:
        return {k: v for k, v in self.bench.items() if k not in BENCH_NOT_MEASURED}

    @staticmethod
    def code(rule: str) -> str:
        """The post-processing rule's code version (a param: the tables, figures or page are made again when the
        code that makes them changes; measurements are not: see code_version)."""
        return code_version(POST_PROCESSING[rule])

    def bench_summary(self) -> dict:
        """How llama-bench's repetitions are summarised (the aggregate's params: a change re-aggregates)."""
        return {k: self.bench[k] for k in ("discard_first", "noise_threshold_pct")}

    def gpu_settings(self, wildcards) -> dict:
        """The `gpu:` section for jobs of a CUDA build (the emulated free memory changes what they measure);
        nothing for a CPU build, whose measurements it cannot change."""
        return self.gpu if self.is_gpu_build(wildcards.build) else {}

    def cache_dir(self):
        return self.config.get("cache_dir")

    def build_spec(self, wildcards) -> dict:
        return canonical(self.build(wildcards.build))

    # --- models ---------------------------------------------------------------------------------------

    def quant_origin(self, model: str, quant: str) -> dict:
        return self.config["models"][model]["quants"][quant]

    def manifest(self, model: str, quant: str) -> str:
        """Each origin kind has its own folder, so one rule makes each path (sources/registry.py)."""
        kind = quant_kind(next(iter(self.quant_origin(model, quant))))
        return paths.path(paths.MANIFEST, model=model, folder=kind.folder, quant=quant)

    def quants(self, model: str) -> list[str]:
        return list(self.config["models"][model]["quants"])

    def baseline(self, model: str) -> str:
        return self.config["models"][model]["baseline"]

    @staticmethod
    def source_gguf(model: str) -> str:
        return paths.path(paths.MODEL_SOURCE, model=model)

    def model_source_spec(self, wildcards) -> dict:
        src = self.config["models"][wildcards.model]["source"]
        if "synthetic" in src:  # a vocab given by name is looked up in the quantize build's llama.cpp source tree
            build = self.config["builds"][quantize_build(self.config, wildcards.model)]
            src = {"synthetic": {**src["synthetic"], "llama_source": build["source"]}}
        return canonical(with_content(src))

    def quant_origin_spec(self, wildcards) -> dict:
        return canonical(with_content(self.quant_origin(wildcards.model, wildcards.quant)))

    def quantize_inputs(self, wildcards) -> dict:
        """The model's source file and the quantize build's record (not its llama-quantize: see run_inputs).
        rules/common.smk marks the record ancient(): a rebuilt llama.cpp does not re-make the quants (and so
        re-measure every build); re-quantize on purpose with --forcerun quantize_gguf."""
        return {"source": self.source_gguf(wildcards.model),
                "build": self.build_json(quantize_build(self.config, wildcards.model))}

    # --- data -----------------------------------------------------------------------------------------

    @staticmethod
    def corpus(corpus: str) -> str:
        return paths.path(paths.CORPUS, corpus=corpus)

    @staticmethod
    def corpus_json(corpus: str) -> str:
        return paths.path(paths.CORPUS_RECORD, corpus=corpus)

    def corpus_spec(self, wildcards) -> dict:
        return canonical(with_content(self.config["corpora"][wildcards.corpus]))

    # --- result files ---------------------------------------------------------------------------------

    def perplexity_results(self) -> list[str]:
        """Each PPL cell's record: its own perplexity job, or the KLD/baseline run that measured the same thing."""
        return list(dict.fromkeys(run.path for _, run in runs.ppl_sources(self.config)))

    def kld_results(self) -> list[str]:
        return [run.path for run in runs.kld_runs(self.config) if run.kind == "kld"]

    def kv_cost_results(self) -> list[str]:
        return [run.path for run in runs.kv_cost_runs(self.config)]

    def kld_base_results(self) -> list[str]:
        return [run.path for run in runs.kld_runs(self.config) if run.kind == "kld_base"]

    def bench_strategies(self) -> dict:
        """Offload strategies of the bench plan; without any, one that runs llama-bench as configured."""
        return self.bench.get("strategies") or {"default": {}}

    def bench_results(self) -> list[str]:
        """Every strategy on every quant, or on the quants a strategy names (bench.strategies.<s>.quants)."""
        return [paths.path(paths.BENCH, build=b, model=m, quant=q, strategy=s)
                for b in self.builds for m in self.models for q in self.quants(m)
                for s, spec in self.bench_strategies().items() if q in (spec.get("quants") or [q])]

    def manifests(self) -> list[str]:
        """Every quant's manifest: what the aggregate checks each record against (the file it measured is there)."""
        return [self.manifest(m, q) for m in self.models for q in self.quants(m)]

    def corpus_records(self) -> list[str]:
        """The records of the corpora the PPL and KLD jobs measure on."""
        return [self.corpus_json(c) for c in dict.fromkeys(s["corpus"] for s in (self.ppl, self.kld, self.kv_cost)
                                                           if s)]

    def task_cells(self, model: str) -> list[tuple[str, str]]:
        """(quant, kv) of every task pass of a model: tasks.quants (default: all its quants) x tasks.kv, and the
        baseline cell (the model's baseline with tasks.base_kv) that every other cell's flips are counted against."""
        wanted = self.tasks.get("quants") or self.quants(model)
        cells = [(q, kv) for q in self.quants(model) if q in wanted for kv in self.tasks["kv"]]
        return list(dict.fromkeys([(self.baseline(model), self.tasks["base_kv"]), *cells]))

    def task_results(self) -> list[str]:
        """Every build x model x task set x cell's record (none without a tasks: section)."""
        if not self.tasks:
            return []
        return [paths.path(paths.TASKS, build=b, model=m, taskset=t, quant=q, kv=kv)
                for b in self.builds for m in self.models for t in self.tasks["sets"] for q, kv in self.task_cells(m)]

    def task_noise_floor_results(self) -> list[str]:
        """The baseline cell scored again with tasks.noise_floor's batch sizes, per build x model x task set."""
        if not self.tasks or not self.tasks.get("noise_floor"):
            return []
        return [paths.path(paths.TASKS_NOISE_FLOOR, build=b, model=m, taskset=t, quant=self.baseline(m),
                           kv=self.tasks["base_kv"])
                for b in self.builds for m in self.models for t in self.tasks["sets"]]

    def task_baselines(self) -> dict:
        """{model: [quant, kv]}: each model's baseline cell of the task passes (the aggregate's params: the flips
        are counted against it)."""
        if not self.tasks:
            return {}
        return {m: [self.baseline(m), self.tasks["base_kv"]] for m in self.models}

    def tune_results(self) -> list[str]:
        """One tuner job per build x model x quant x VRAM budget x served context (when `tuner:` is configured)."""
        return [paths.path(paths.TUNE, build=b, model=m, quant=q, budget=budget, ctx=ctx)
                for b in self.builds for m in self.models for q in self.quants(m)
                for budget in self.tuner["vram_budgets_gib"] for ctx in runs.serve_contexts(self.config)]

    def server_results(self) -> list[str]:
        """One server check per build x model x VRAM budget x served context (server.check, with budgets)."""
        if not self.server["check"]:
            return []
        from ..report.recommend import budgets_from_config

        return [paths.path(paths.SERVER, build=b, model=m, budget=gib, ctx=ctx)
                for b in self.builds for m in self.models for _, gib in budgets_from_config(self.config)
                for ctx in runs.serve_contexts(self.config)]

    # --- the measuring jobs' inputs -------------------------------------------------------------------

    def run_inputs(self, wildcards, corpus: str | None, quant: str | None = None) -> dict:
        """What every llama.cpp measurement job reads: its build's record, the model, the corpus. The tool itself
        is not an input: a deleted binary would make Snakemake run the build job and then every job after it;
        the job finds its tool through the record and puts it back from the build cache if it must
        (build.ensure_tool)."""
        quant = quant or wildcards.quant
        inputs = {"build": self.build_json(wildcards.build), "manifest": self.manifest(wildcards.model, quant)}
        if corpus:
            inputs["corpus"] = self.corpus(corpus)
            inputs["corpus_record"] = self.corpus_json(corpus)
        return inputs

    def perplexity_inputs(self, wildcards) -> dict:
        return self.run_inputs(wildcards, self.ppl["corpus"])

    def perplexity_chunks(self, wildcards):
        return runs.ppl_chunks(self.config, int(wildcards.ctx))

    def kld_base_inputs(self, wildcards) -> dict:
        return self.run_inputs(wildcards, self.kld["corpus"], quant=self.baseline(wildcards.model))

    def kld_inputs(self, wildcards) -> dict:
        inputs = self.run_inputs(wildcards, self.kld["corpus"])
        base = dict(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx, kv=self.kld_base_kv)
        inputs.update(logits=paths.path(paths.KLD_BASE_LOGITS, **base),
                      base_record=paths.path(paths.KLD_BASE, **base))
        return inputs

    def kv_cost_inputs(self, wildcards) -> dict:
        return self.run_inputs(wildcards, self.kv_cost["corpus"])

    def kv_cost_cells(self, wildcards) -> dict:
        """What one scorer run measures besides its context (measure/kv_cost.KvCostCells): the reference and the KV
        types, the chunks at this context, the position bins, the tokens per decode."""
        ctx = int(wildcards.ctx)
        run = next(r for r in runs.kv_cost_runs(self.config) if (r.build, r.model, r.quant, r.ctx) ==
                   (wildcards.build, wildcards.model, wildcards.quant, ctx))
        kc = self.kv_cost
        return canonical({"ref_kv": kc.get("ref_kv", "f16"), "kvs": list(kc.get("kv", ["q8_0", "q4_0"])),
                          "chunks": run.chunks, "bins": [b for b in kc.get("bins", [0]) if b < ctx - 1] or [0],
                          "batch": min(int(kc.get("batch", 512)), ctx)})

    def kld_shard_plan_inputs(self, wildcards) -> dict:
        return self.run_inputs(wildcards, self.kld["corpus"], quant=self.baseline(wildcards.model))

    def kld_shard_runs(self, wildcards) -> list[list[str]]:
        """The [quant, kv] KLD passes every shard of this build and model makes (the plan's KLD runs)."""
        return [[r.quant, r.kv] for r in runs.kld_runs(self.config)
                if r.kind == "kld" and (r.build, r.model) == (wildcards.build, wildcards.model)]

    def kld_shard_quants(self, wildcards) -> list[str]:
        return list(dict.fromkeys(q for q, _ in self.kld_shard_runs(wildcards)))

    def kld_shard_inputs(self, wildcards) -> dict:
        inputs = self.run_inputs(wildcards, self.kld["corpus"], quant=self.baseline(wildcards.model))
        at = dict(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx)
        return {**inputs, "base_manifest": inputs.pop("manifest"), "plan": paths.path(paths.KLD_SHARD_PLAN, **at),
                "tokens": paths.path(paths.KLD_SHARD_TOKENS, **at),
                "manifests": [self.manifest(wildcards.model, q) for q in self.kld_shard_quants(wildcards)]}

    @staticmethod
    def kld_shard_disk_mb(wildcards, input) -> int:
        """The shard's logits file, exactly as forecast in the plan, in MB."""
        shard_bytes = read_shard_plan(input.plan)["shard_logits_bytes"][int(wildcards.shard)]
        return max(1, -(-shard_bytes // 1_000_000))

    @staticmethod
    def kld_shard_records(wildcards, plan_path) -> list[str]:
        """Every shard's record, once checkpoint kld_shard_plan (its output plan_path) said how many there are."""
        n = read_shard_plan(plan_path)["n_shards"]
        at = dict(build=wildcards.build, model=wildcards.model, ctx=wildcards.ctx)
        return [paths.path(paths.KLD_SHARD, **at, shard=i) for i in range(n)]

    def bench_strategy_spec(self, wildcards) -> dict:
        return self.bench_strategies()[wildcards.strategy]

    def bench_inputs(self, wildcards) -> dict:
        return self.run_inputs(wildcards, None)

    # --- tasks ----------------------------------------------------------------------------------------

    def task_set_spec(self, wildcards) -> dict:
        return canonical(self.tasks["sets"][wildcards.taskset])

    def task_set_inputs(self, wildcards) -> dict:
        """A cloze set is made from a corpus of the run (and carries its record); other kinds read no input."""
        spec = self.tasks["sets"][wildcards.taskset]
        if "cloze" not in spec:
            return {}
        corpus = spec["cloze"]["corpus"]
        return {"corpus": self.corpus(corpus), "corpus_record": self.corpus_json(corpus)}

    def task_score_inputs(self, wildcards) -> dict:
        """The build record and model (run_inputs), the task set's file and its record."""
        return {**self.run_inputs(wildcards, None), "tasks": paths.path(paths.TASK_SET, taskset=wildcards.taskset),
                "task_record": paths.path(paths.TASK_SET_RECORD, taskset=wildcards.taskset)}

    def task_scoring(self, wildcards) -> dict:
        """What a pass measures with: -c per sequence, and -b/-ub (None: llama.cpp's defaults)."""
        return {k: self.tasks[k] for k in ("ctx", "batch", "ubatch")}

    def task_noise_floor(self, wildcards) -> dict:
        """The noise floor's batch sizes (tasks.noise_floor)."""
        return self.tasks["noise_floor"]

    # --- server checks --------------------------------------------------------------------------------

    def server_check_inputs(self, wildcards) -> dict:
        """The server, and this build's and model's own records (not the tables: another build's results changing
        must not start this build's server checks again)."""
        mine = f"/{wildcards.build}/{wildcards.model}/"
        records = {"perplexity": self.perplexity_results(), "kld": self.kld_results(),
                   "bench": self.bench_results(), "tune": self.tune_results()}
        return {"build": self.build_json(wildcards.build),
                "manifests": [self.manifest(wildcards.model, q) for q in self.quants(wildcards.model)],
                **{name: [p for p in found if mine in p] for name, found in records.items()}}

    def model_quants(self, wildcards) -> list[str]:
        """The model's quants, sorted: their order in the config is not part of what a server check measures."""
        return sorted(self.quants(wildcards.model))

    def recommend_config(self, wildcards) -> dict:
        """What the recommendation reads from the config (the baseline, the KV types): only this, so an unrelated
        config change does not start the server checks again."""
        return canonical({"models": {wildcards.model: {"baseline": self.baseline(wildcards.model)}},
                          "kld": {"base_kv": self.kld_base_kv},
                          "perplexity": {"kv": self.ppl.get("kv", [])}})
