"""Checks the JSON Schema cannot express: cross-references between config sections, and the numbers it lets
through (an integer written as 512.0, .nan), one small check per concern (CHECKS).

Run by rules/common.smk right after schema validation, so a bad config fails before any job runs, with a
message that names the key.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import ConfigError

# ggml's GGML_MAX_N_THREADS (ggml/include/ggml.h): the most threads a llama.cpp tool takes (config maximum too)
GGML_MAX_N_THREADS = 512


def check_config(config: dict) -> None:
    """Every problem at once, one line each naming its key: ConfigError when there is any."""
    problems = [problem for check in CHECKS for problem in check(config)]
    if problems:
        raise ConfigError("config is inconsistent:\n  " + "\n  ".join(problems))


def _models(config: dict) -> list[str]:
    """A model's baseline is one of its quants, its quantize_build a build, and a made quant has a source."""
    builds = config["builds"]
    problems = []
    for name, model in config["models"].items():
        quants = model["quants"]
        if model["baseline"] not in quants:
            problems.append(f"models.{name}.baseline: {model['baseline']!r} is not one of models.{name}.quants "
                            f"({', '.join(quants)})")
        qb = model.get("quantize_build")
        if qb is not None and qb not in builds:
            problems.append(f"models.{name}.quantize_build: {qb!r} is not a key of builds ({', '.join(builds)})")
        problems += _made_without_source(name, model)
    return problems


def _made_without_source(name: str, model: dict) -> list[str]:
    if "source" in model:
        return []
    return [f"models.{name}.quants.{quant}: `{kind}:` needs models.{name}.source (the file it is made from)"
            for quant, origin in model["quants"].items() for kind in ("quantize", "source") if kind in origin]


def _missing_files(config: dict) -> list[str]:
    return [f"{key}: {path} does not exist (relative paths are read from the working directory, {Path.cwd()}); "
            "fix the path or put the file there"
            for key, path in _local_paths(config) if not Path(path).exists()]


def _quality_corpora(config: dict) -> list[str]:
    """perplexity.corpus, kld.corpus and kv_cost.corpus name a corpus (a speed-only study has none of them)."""
    corpora = config["corpora"]
    return [f"{section}.corpus: {config[section]['corpus']!r} is not a key of corpora ({', '.join(corpora)})"
            for section in ("perplexity", "kld", "kv_cost") if section in config
            and config[section]["corpus"] not in corpora]


def _kld_mode(config: dict) -> list[str]:
    kld = config.get("kld") or {}
    mode = kld.get("mode", "chunks")
    problems = []
    if kld and mode == "chunks" and kld.get("chunks") is None:
        problems.append("kld.chunks: mode chunks needs it (the baseline logits are kept for that many chunks); "
                        "or set kld.mode: sharded to score the whole corpus in bounded disk")
    if "sharded" in kld and mode != "sharded":
        problems.append("kld.sharded: only read in mode sharded; set kld.mode: sharded or remove it")
    return problems


def _chunks_by_ctx(config: dict) -> list[str]:
    problems = []
    for section in ("perplexity", "kld", "kv_cost"):
        sec = config.get(section) or {}
        ctx = sec.get("ctx", [])
        ctxs = ctx if isinstance(ctx, list) else [ctx]
        problems += [f"{section}.chunks_by_ctx: {key} is not one of {section}.ctx ({ctxs})"
                     for key in (sec.get("chunks_by_ctx") or {}) if not str(key).isdigit() or int(key) not in ctxs]
    return problems


def _kv_cost(config: dict) -> list[str]:
    """kv_cost.bins start at 0 and increase; kv_cost.quants are quants of the models; the reference is not scored
    against itself."""
    kc = config.get("kv_cost") or {}
    if not kc:
        return []
    problems = []
    bins = kc.get("bins", [0])
    if bins[0] != 0 or bins != sorted(bins):
        problems.append(f"kv_cost.bins: {bins} must increase from 0 (edges of the position bins, e.g. [0, 1024, 4096])")
    known = {q for m in config["models"].values() for q in m["quants"]}
    problems += [f"kv_cost.quants: {q!r} is not a quant of any model ({', '.join(sorted(known))})"
                 for q in kc.get("quants") or [] if q not in known]
    ref = kc.get("ref_kv", "f16")
    if ref in kc.get("kv", []):
        problems.append(f"kv_cost.kv: {ref!r} is kv_cost.ref_kv, the reference: a KV type against itself measures "
                        "nothing; drop it from kv_cost.kv")
    return problems


def _bench_contexts(config: dict) -> list[str]:
    """A served context holds the prompt and what is generated, and sets the depth itself."""
    bench = config.get("bench") or {}
    contexts = bench.get("contexts") or []
    top = max(max(bench.get("prompt") or [512]), max(bench.get("gen") or [128]))
    problems = [f"bench.contexts: {c} is not above the largest prompt/gen size ({top}): a context holds the prompt "
                "and what is generated" for c in contexts if c <= top]
    if contexts and any(bench.get("depth") or []):
        problems.append("bench.depth and bench.contexts both set: a served context sets the depth (context - "
                        "prompt); drop one")
    return problems


def _strategy_quants(config: dict) -> list[str]:
    """A strategy measured on some quants names quants the models have."""
    known = {q for m in config["models"].values() for q in m["quants"]}
    strategies = (config.get("bench") or {}).get("strategies") or {}
    return [f"bench.strategies.{name}.quants: {q!r} is not a quant of any model ({', '.join(sorted(known))})"
            for name, spec in strategies.items() for q in spec.get("quants") or [] if q not in known]


def _quantized_v_without_flash_attention(config: dict) -> list[str]:
    """llama.cpp refuses a quantized V cache without Flash Attention ("quantized V cache was requested, but this
    requires Flash Attention", src/llama-context.cpp); the tool then only says "failed to create context"."""
    if (config.get("run") or {}).get("flash_attn") != "off":
        return []
    problems = []
    for key, kv in _kv_types(config):
        k, v = kv_pair(kv)
        if v not in ("f16", "f32", "bf16"):
            problems.append(f"{key}: {kv!r} quantizes the V cache ({v}), which llama.cpp runs only with Flash "
                            f"Attention, and run.flash_attn is off: set run.flash_attn to on (or auto), or keep V "
                            f"at f16 (e.g. {k}-f16)")
    return problems


def _kv_types(config: dict):
    """(config key, KV type) of every KV type the config asks for; kld.kv and kld.base_kv may be one string."""
    for section, key in (("perplexity", "kv"), ("kld", "kv"), ("kld", "base_kv"), ("bench", "kv"), ("kv_cost", "kv"),
                         ("kv_cost", "ref_kv")):
        kvs = (config.get(section) or {}).get(key) or []
        for kv in [kvs] if isinstance(kvs, str) else kvs:
            yield f"{section}.{key}", kv


def _local_paths(config: dict):
    """(config key, path) of every file on disk the config names: local builds, model sources, quants, corpora."""
    for name, build in config["builds"].items():
        if "local" in build["source"]:
            yield f"builds.{name}.source.local.path", build["source"]["local"]["path"]
    for name, model in config["models"].items():
        if "local" in (model.get("source") or {}):
            yield f"models.{name}.source.local.path", model["source"]["local"]["path"]
        for quant, origin in model["quants"].items():
            if "local" in origin:
                yield f"models.{name}.quants.{quant}.local.path", origin["local"]["path"]
    for name, corpus in config["corpora"].items():
        if "local" in corpus:
            yield f"corpora.{name}.local.path", corpus["local"]["path"]
    yield from _task_set_paths(config)


def _task_set_paths(config: dict):
    for name, spec in ((config.get("tasks") or {}).get("sets") or {}).items():
        if "local" in spec:
            yield f"tasks.sets.{name}.local.path", spec["local"]["path"]


def _task_sets(config: dict) -> list[str]:
    """A cloze set names a corpus; tasks.quants names quants some model has (the baseline is always scored)."""
    tasks = config.get("tasks") or {}
    corpora = config["corpora"]
    problems = [f"tasks.sets.{name}.cloze.corpus: {spec['cloze']['corpus']!r} is not a key of corpora "
                f"({', '.join(corpora)})" for name, spec in (tasks.get("sets") or {}).items()
                if "cloze" in spec and spec["cloze"]["corpus"] not in corpora]
    known = {q for model in config["models"].values() for q in model["quants"]}
    problems += [f"tasks.quants: {q!r} is a quant of no model ({', '.join(sorted(known))})"
                 for q in tasks.get("quants") or [] if q not in known]
    return problems


def _numbers(config: dict) -> list[str]:
    """Numbers the schema lets through: an integer key written as 512.0 (JSON Schema counts it as an integer, but
    it would reach result paths as ctx512.0, which no rule's wildcard makes, and llama.cpp's command lines), and
    .nan / .inf (every comparison with NaN is false, so no minimum or maximum refuses it)."""
    schema = load_schema()
    return [problem for key, value, node in _leaves(config, schema, schema, "")
            for problem in _number_problem(key, value, node)]


def _number_problem(key: str, value, node: dict) -> list[str]:
    if not isinstance(value, float):
        return []
    if not math.isfinite(value):
        return [f"{key}: {value} is not a finite number; give a number in the range the schema states for it"]
    types = node.get("type") or []
    types = {types} if isinstance(types, str) else set(types)
    if "integer" in types and "number" not in types:
        return [f"{key}: {value!r} is an integer written with a decimal point: write {int(value)} (it goes into "
                "result paths and llama.cpp command lines as written)"]
    return []


def _leaves(value, node: dict, root: dict, key: str):
    """(config key, value, schema node) of every scalar in the config, walking the schema alongside it (properties,
    additionalProperties, items, $ref, oneOf/anyOf); a list's items keep the list's key."""
    for sub in _describing(value, node, root):
        if isinstance(value, dict):
            for k, v in value.items():
                child = _property(sub, k)
                if child is not None:
                    yield from _leaves(v, child, root, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            if isinstance(sub.get("items"), dict):
                for v in value:
                    yield from _leaves(v, sub["items"], root, key)
        else:
            yield key, value, sub


def _describing(value, node: dict, root: dict) -> list[dict]:
    """The schema nodes that describe `value`: the node ($ref followed), or those of its oneOf/anyOf branches that
    are arrays when the value is a list and not arrays when it is not."""
    node = _deref(node, root)
    branches = [_deref(b, root) for b in node.get("oneOf") or node.get("anyOf") or []]
    if not branches:
        return [node]
    return [b for b in branches if (b.get("type") == "array") == isinstance(value, list)]


def _deref(node: dict, root: dict) -> dict:
    """The node a local $ref ("#/$defs/name") points to, or the node itself."""
    ref = node.get("$ref")
    if not ref:
        return node
    for part in ref.removeprefix("#/").split("/"):
        root = root[part]
    return root


def _property(node: dict, name) -> dict | None:
    props = node.get("properties") or {}
    if name in props:
        return props[name]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


# One check per concern, in the order their lines are reported.
CHECKS = (_models, _missing_files, _quality_corpora, _kld_mode, _chunks_by_ctx, _kv_cost, _bench_contexts,
          _strategy_quants, _quantized_v_without_flash_attention, _numbers, _task_sets)


def kv_pair(kv: str) -> tuple[str, str]:
    """'q8_0' -> ('q8_0', 'q8_0'); 'q8_0-f16' -> ('q8_0', 'f16')."""
    k, _, v = kv.partition("-")
    return k, v or k


def quantize_build(config: dict, model: str) -> str:
    return config["models"][model].get("quantize_build") or next(iter(config["builds"]))


SCHEMA = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"


def load_schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


def with_sections(config: dict, schema: dict | None = None) -> dict:
    """The config with every optional section that has no required key (run, tuner, server, gpu, report, ...)
    present, empty if absent, so that schema validation fills in their defaults and code reads them from the
    config instead of repeating them. Sections with required keys (perplexity, kld) stay absent: absent means
    off."""
    schema = schema or load_schema()
    for name, prop in schema["properties"].items():
        if name not in config and prop.get("type") == "object" and not prop.get("required") \
                and any("default" in p for p in (prop.get("properties") or {}).values()):
            config[name] = {}
    return config


def validated(config: dict) -> dict:
    """The config as the workflow sees it: sections added, validated against the schema, defaults filled in
    (what rules/common.smk does, for code and tests that load a config file themselves)."""
    from snakemake.utils import validate

    validate(with_sections(config), schema=str(SCHEMA))
    return config


def defaults(section: str, schema: dict | None = None) -> dict:
    """A section's defaults as the schema states them (for code and tests that build a section by hand)."""
    schema = schema or load_schema()
    props = schema["properties"][section].get("properties") or {}
    return {k: p["default"] for k, p in props.items() if "default" in p}
