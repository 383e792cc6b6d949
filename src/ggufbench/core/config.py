"""Checks the JSON Schema cannot express: cross-references between config sections.

Run by rules/common.smk right after schema validation, so a bad config fails before any job runs, with a
message that names the key.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def check_config(config: dict) -> None:
    problems: list[str] = []
    builds = config["builds"]
    for name, model in config["models"].items():
        quants = model["quants"]
        if model["baseline"] not in quants:
            problems.append(f"models.{name}.baseline: {model['baseline']!r} is not one of models.{name}.quants "
                            f"({', '.join(quants)})")
        qb = model.get("quantize_build")
        if qb is not None and qb not in builds:
            problems.append(f"models.{name}.quantize_build: {qb!r} is not a key of builds ({', '.join(builds)})")
        for quant, origin in quants.items():
            for kind in ("quantize", "source"):
                if kind in origin and "source" not in model:
                    problems.append(f"models.{name}.quants.{quant}: `{kind}:` needs models.{name}.source "
                                    "(the file it is made from)")
    for key, path in _local_paths(config):
        if not Path(path).exists():
            problems.append(f"{key}: {path} does not exist (relative paths are read from the working directory, "
                            f"{Path.cwd()}); fix the path or put the file there")
    for section in ("perplexity", "kld"):
        if section not in config:  # a speed-only study measures no quality
            continue
        corpus = config[section]["corpus"]
        if corpus not in config["corpora"]:
            problems.append(f"{section}.corpus: {corpus!r} is not a key of corpora "
                            f"({', '.join(config['corpora'])})")
    kld = config.get("kld") or {}
    if kld and kld.get("mode", "chunks") == "chunks" and kld.get("chunks") is None:
        problems.append("kld.chunks: mode chunks needs it (the baseline logits are kept for that many chunks); "
                        "or set kld.mode: sharded to score the whole corpus in bounded disk")
    if "sharded" in kld and kld.get("mode", "chunks") != "sharded":
        problems.append("kld.sharded: only read in mode sharded; set kld.mode: sharded or remove it")
    ppl = config.get("perplexity") or {}
    ctxs = ppl.get("ctx", [])
    for key in (ppl.get("chunks_by_ctx") or {}):
        if int(key) not in ctxs:
            problems.append(f"perplexity.chunks_by_ctx: {key} is not one of perplexity.ctx ({ctxs})")
    bench = config.get("bench") or {}
    contexts = bench.get("contexts") or []
    top = max(max(bench.get("prompt") or [512]), max(bench.get("gen") or [128]))
    for c in contexts:
        if c <= top:
            problems.append(f"bench.contexts: {c} is not above the largest prompt/gen size ({top}): a context holds "
                            "the prompt and what is generated")
    if contexts and any(bench.get("depth") or []):
        problems.append("bench.depth and bench.contexts both set: a served context sets the depth (context - "
                        "prompt); drop one")
    problems += _quantized_v_without_flash_attention(config)
    if problems:
        raise ConfigError("config is inconsistent:\n  " + "\n  ".join(problems))


def _quantized_v_without_flash_attention(config: dict) -> list[str]:
    """llama.cpp refuses a quantized V cache without Flash Attention ("quantized V cache was requested, but this
    requires Flash Attention", src/llama-context.cpp); the tool then only says "failed to create context"."""
    if (config.get("run") or {}).get("flash_attn") != "off":
        return []
    out = []
    for section, key in (("perplexity", "kv"), ("kld", "kv"), ("kld", "base_kv"), ("bench", "kv")):
        kvs = (config.get(section) or {}).get(key) or []
        for kv in [kvs] if isinstance(kvs, str) else kvs:
            v = kv_pair(kv)[1]
            if v not in ("f16", "f32", "bf16"):
                out.append(f"{section}.{key}: {kv!r} quantizes the V cache ({v}), which llama.cpp runs only with "
                           "Flash Attention, and run.flash_attn is off: set run.flash_attn to on (or auto), or "
                           "keep V at f16 (e.g. {k}-f16)".replace("{k}", kv_pair(kv)[0]))
    return out


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
