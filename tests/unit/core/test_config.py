"""Config checks: the JSON Schema (through Snakemake's validate, as rules/common.smk runs it) and the
cross-reference checks of ggufbench.config, on the shipped configs and on realistic mistakes."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ggufbench.core.config import check_config, kv_pair, quantize_build
from ggufbench.core.errors import ConfigError
from tests.support import REPO

CONFIG_DIR = REPO / "config"


SCHEMA = str(CONFIG_DIR / "schema.yaml")


def _load(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


@pytest.fixture
def demo() -> dict:
    return _load("demo.yaml")


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml"])
def test_shipped_configs_pass(name):
    config = _load(name)
    validate(config, SCHEMA)
    check_config(config)


def test_schema_fills_defaults(demo):
    # validate() sets schema defaults in place (Snakemake's set_default=True); the rules rely on them
    del demo["kld"]["base_kv"]
    validate(demo, SCHEMA)
    assert demo["kld"]["base_kv"] == "f16"
    assert demo["bench"]["extra_args"] == []
    assert demo["kld"]["max_logits_gib"] == 1  # given values are kept


def _problems(config) -> str:
    with pytest.raises(ConfigError) as ei:
        check_config(config)
    return str(ei.value)


def test_baseline_not_in_quants(demo):
    demo["models"]["smollm2-135m"]["baseline"] = "BF16"
    msg = _problems(demo)
    assert "models.smollm2-135m.baseline: 'BF16' is not one of models.smollm2-135m.quants" in msg
    assert "F16, Q8_0, Q4_K_M, Q2_K" in msg


def test_a_context_must_hold_the_prompt(demo):
    demo["bench"]["contexts"] = [512, 4096]
    assert "bench.contexts: 512 is not above the largest prompt/gen size (512)" in _problems(demo)


def test_contexts_and_depth_exclude_each_other(demo):
    demo["bench"]["depth"] = [0, 2048]
    assert "bench.depth and bench.contexts both set" in _problems(demo)


def test_a_speed_only_study_needs_no_quality_sections(tmp_path, monkeypatch):
    config = _load("../tools/device/study-cuda.yaml")
    monkeypatch.chdir(tmp_path)  # where the device run has its carried llama.cpp tarball
    tarball = tmp_path / config["builds"]["cuda"]["source"]["local"]["path"]
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"")
    assert "perplexity" not in config and "kld" not in config
    validate(config, SCHEMA)
    check_config(config)
    assert config["models"]["qwen35-shape"]["quants"]["Q4_K_M"] == {"source": True}


def test_a_source_quant_needs_a_source(demo):
    del demo["models"]["smollm2-135m"]["source"]
    demo["models"]["smollm2-135m"]["quants"]["F16"] = {"source": True}
    assert "models.smollm2-135m.quants.F16: `source:` needs models.smollm2-135m.source" in _problems(demo)


def test_perplexity_corpus_unknown(demo):
    demo["perplexity"]["corpus"] = "wikitext2"
    msg = _problems(demo)
    assert "perplexity.corpus: 'wikitext2' is not a key of corpora (pydocs)" in msg
    assert "kld.corpus" not in msg


def test_kld_corpus_unknown(demo):
    demo["kld"]["corpus"] = "wikitext2"
    msg = _problems(demo)
    assert "kld.corpus: 'wikitext2' is not a key of corpora" in msg
    assert "perplexity.corpus" not in msg


def test_quantize_without_source(demo):
    del demo["models"]["smollm2-135m"]["source"]
    validate(copy.deepcopy(demo), SCHEMA)  # the schema allows it (hub/local quants need no source) ...
    msg = _problems(demo)  # ... the cross-check does not, once a quant says `quantize:`
    assert "models.smollm2-135m.quants.F16: `quantize:` needs models.smollm2-135m.source" in msg
    assert "models.smollm2-135m.quants.Q2_K:" in msg  # every such quant is named


def test_quantize_without_source_is_fine_for_hub_quants():
    config = _load("config.yaml")
    assert all("source" not in m for m in config["models"].values())
    check_config(config)


def test_quantize_build_unknown(demo):
    demo["models"]["smollm2-135m"]["quantize_build"] = "cuda"
    msg = _problems(demo)
    assert "models.smollm2-135m.quantize_build: 'cuda' is not a key of builds (cpu)" in msg


def test_all_problems_reported_at_once(demo):
    demo["models"]["smollm2-135m"]["baseline"] = "BF16"
    demo["kld"]["corpus"] = "nope"
    demo["models"]["smollm2-135m"]["quantize_build"] = "cuda"
    msg = _problems(demo)
    assert msg.startswith("config is inconsistent:")
    assert "models.smollm2-135m.baseline" in msg
    assert "models.smollm2-135m.quantize_build" in msg
    assert "kld.corpus" in msg
    assert len(msg.splitlines()) == 4


def test_quantize_build_default_and_explicit(demo):
    assert quantize_build(demo, "smollm2-135m") == "cpu"
    demo["builds"]["cpu2"] = copy.deepcopy(demo["builds"]["cpu"])
    assert quantize_build(demo, "smollm2-135m") == "cpu"  # the first build
    demo["models"]["smollm2-135m"]["quantize_build"] = "cpu2"
    check_config(demo)
    assert quantize_build(demo, "smollm2-135m") == "cpu2"


@pytest.mark.parametrize(
    ("kv", "pair"),
    [("f16", ("f16", "f16")), ("q8_0", ("q8_0", "q8_0")), ("q8_0-f16", ("q8_0", "f16")),
     ("q4_0-q8_0", ("q4_0", "q8_0"))],
)
def test_kv_pair(kv, pair):
    assert kv_pair(kv) == pair


def _schema_error(config) -> str:
    with pytest.raises(WorkflowError) as ei:
        validate(config, SCHEMA)
    msg = str(ei.value)
    assert msg.startswith("Error validating config file.")
    return msg


def test_schema_unknown_key(demo):
    demo["perplexity"]["ktx"] = [512]  # a typo of ctx
    msg = _schema_error(demo)
    assert "'ktx' was unexpected" in msg
    assert "['perplexity']" in msg


def test_schema_unknown_top_level_key(demo):
    demo["perplexty"] = {"corpus": "pydocs"}
    assert "'perplexty' was unexpected" in _schema_error(demo)


def test_schema_wrong_type_ctx_list(demo):
    demo["perplexity"]["ctx"] = "512"
    msg = _schema_error(demo)
    assert "'512' is not of type 'array'" in msg
    assert "instance['perplexity']['ctx']" in msg


def test_schema_wrong_type_ctx_item(demo):
    demo["perplexity"]["ctx"] = ["512"]
    assert "'512' is not of type 'integer'" in _schema_error(demo)


def test_schema_wrong_type_kld_ctx(demo):
    demo["kld"]["ctx"] = "512"
    msg = _schema_error(demo)
    assert "'512' is not of type 'integer'" in msg
    assert "instance['kld']['ctx']" in msg


def test_schema_kv_pattern(demo):
    demo["perplexity"]["kv"] = ["f16", "q8_0-f16"]
    validate(copy.deepcopy(demo), SCHEMA)
    demo["perplexity"]["kv"] = ["Q8_0"]  # llama.cpp's type names are lower case
    assert "does not match" in _schema_error(demo)


def test_schema_quant_origin_exactly_one(demo):
    demo["models"]["smollm2-135m"]["quants"]["Q8_0"] = {
        "quantize": "Q8_0", "hub": {"repo": "unsloth/Qwen3.5-35B-A3B-GGUF", "quant": "Q8_0"}}
    assert "too many properties" in _schema_error(demo).lower()


def test_schema_hub_needs_quant_or_file():
    config = _load("config.yaml")
    del config["models"]["qwen3.5-35b-a3b"]["quants"]["Q8_0"]["hub"]["quant"]
    msg = _schema_error(config)
    assert "is not valid under any of the given schemas" in msg
    assert "'oneOf'" in msg


def test_schema_max_logits_must_be_positive(demo):
    demo["kld"]["max_logits_gib"] = 0
    msg = _schema_error(demo)
    assert "0 is less than or equal to the minimum of 0" in msg
    assert "['max_logits_gib']" in msg


def test_schema_names_become_paths(demo):
    demo["models"]["smollm2 135m"] = demo["models"].pop("smollm2-135m")
    assert "does not match" in _schema_error(demo)


def test_kld_chunks_is_required_in_mode_chunks_only(demo):
    del demo["kld"]["chunks"]
    validate(demo, SCHEMA)
    with pytest.raises(ConfigError, match=r"kld.chunks: mode chunks needs it .* kld.mode: sharded"):
        check_config(demo)
    demo["kld"]["mode"] = "sharded"
    validate(demo, SCHEMA)
    check_config(demo)


def test_kld_sharded_settings_need_mode_sharded(demo):
    demo["kld"]["sharded"] = {"disk_budget_gib": 2}
    validate(demo, SCHEMA)
    with pytest.raises(ConfigError, match=r"kld.sharded: only read in mode sharded"):
        check_config(demo)
    demo["kld"]["mode"] = "sharded"
    validate(demo, SCHEMA)
    check_config(demo)
    assert demo["kld"]["sharded"]["parallel"] == 1


def test_schema_kld_mode_and_budget(demo):
    demo["kld"]["mode"] = "shards"
    with pytest.raises(WorkflowError, match="shards"):
        validate(demo, SCHEMA)
    demo["kld"]["mode"] = "sharded"
    demo["kld"]["sharded"] = {"disk_budget_gib": 0}
    with pytest.raises(WorkflowError, match="disk_budget_gib"):
        validate(demo, SCHEMA)


def test_files_on_disk_the_config_names_must_exist(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo["models"]["smollm2-135m"]["quants"]["mine"] = {"local": {"path": "models/mine.gguf"}}
    demo["corpora"]["own"] = {"local": {"path": str(tmp_path / "own.txt")}}
    problems = _problems(demo)
    assert (f"models.smollm2-135m.quants.mine.local.path: models/mine.gguf does not exist (relative paths are read "
            f"from the working directory, {tmp_path})") in problems
    assert f"corpora.own.local.path: {tmp_path / 'own.txt'} does not exist" in problems
    (tmp_path / "models").mkdir()
    (tmp_path / "models/mine.gguf").write_bytes(b"GGUF")
    (tmp_path / "own.txt").write_text("text")
    check_config(demo)


@pytest.mark.faults
@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", "a;touch PWNED"])
def test_names_that_would_leave_or_hide_in_results_are_refused(demo, name):
    demo["models"]["smollm2-135m"]["quants"][name] = {"quantize": "Q8_0"}
    with pytest.raises(WorkflowError, match="does not match"):
        validate(demo, SCHEMA)


@pytest.mark.faults
@pytest.mark.parametrize(("key", "kv"), [("perplexity", "q5_9"), ("kld", "q8_0-q5_9"), ("bench", "Q8_0")])
def test_a_kv_type_llama_cpp_does_not_have_is_refused_before_any_job(demo, key, kv):
    """llama.cpp's own list (common/arg.cpp kv_cache_types); before, q5_9 ran and failed with the tail of the
    usage text (the cause, "Unsupported cache type: q5_9", only in the log)."""
    demo.setdefault(key, {})["kv"] = [kv]
    with pytest.raises(WorkflowError, match=rf"'{kv}'.* (does not match|is not valid)"):
        validate(demo, SCHEMA)


@pytest.mark.faults
def test_a_quantized_v_cache_without_flash_attention_is_refused_naming_both_keys(demo):
    """q4_0 KV with -fa off was only "failed to create context" from llama-perplexity."""
    demo["run"] = {**demo.get("run", {}), "flash_attn": "off"}
    demo["perplexity"]["kv"] = ["f16", "q4_0", "q8_0-f16"]
    with pytest.raises(ConfigError) as e:
        check_config(demo)
    msg = str(e.value)
    assert "perplexity.kv: 'q4_0' quantizes the V cache (q4_0)" in msg and "run.flash_attn is off" in msg
    assert "'q8_0-f16'" not in msg.split("perplexity.kv")[1].split("\n")[0]  # K alone quantized is fine


# --- numbers the schema accepts are numbers llama.cpp and the result paths take --------------------------------

def _numeric_nodes(node, key="", described=False):
    """(config key, schema node, described) of every integer/number node of the schema; described: the node or the
    key holding it (a list's items, a $def's user) has a description."""
    if isinstance(node, dict):
        described = described or "description" in node
        types = node.get("type", [])
        if {"integer", "number"} & ({types} if isinstance(types, str) else set(types)):
            yield key, node, described
        for k, v in node.items():
            if k not in ("default", "enum", "const"):
                yield from _numeric_nodes(v, f"{key}.{k}" if key else k, described and k in ("items", "oneOf"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numeric_nodes(v, f"{key}[{i}]", described)


def test_every_number_in_the_schema_has_a_minimum_a_maximum_and_a_reason():
    """The guard: a number key without bounds is how bench.threads 10000 and budgets of 1e-05 GiB got through."""
    schema = yaml.safe_load((CONFIG_DIR / "schema.yaml").read_text())
    nodes = list(_numeric_nodes(schema))
    assert len(nodes) > 30
    unbounded = [key for key, node, _ in nodes if not ({"minimum", "exclusiveMinimum"} & set(node)
                                                        and {"maximum", "exclusiveMaximum"} & set(node))]
    assert unbounded == []
    assert [key for key, _, described in nodes if not described] == []


def _threads(demo, section, n):
    demo[section] = {**demo.get(section, {}), "threads": [8, n]}
    return demo


@pytest.mark.faults
@pytest.mark.parametrize("section", ["bench", "tuner"])
def test_more_threads_than_ggml_has_are_refused(demo, section):
    """GGML_MAX_N_THREADS is 512 (ggml/include/ggml.h of the vendored llama.cpp); the issue's 10000 was accepted."""
    validate(_threads(copy.deepcopy(demo), section, 512), SCHEMA)
    msg = _schema_error(_threads(demo, section, 10000))
    assert "10000 is greater than the maximum of 512" in msg and f"['{section}']['threads']" in msg


def _budget(config, key, gib):
    where = {"report.vram_budgets_gib": ("report", "vram_budgets_gib", [gib]),
             "tuner.vram_budgets_gib": ("tuner", "vram_budgets_gib", [gib]),
             "report.target_gpu.vram_gib": ("report", "target_gpu", {"name": "card", "vram_gib": gib}),
             "gpu.emulate_free_gib": ("gpu", "emulate_free_gib", gib)}
    section, k, value = where[key]
    config.setdefault(section, {})[k] = value
    return config


BUDGET_KEYS = ["report.vram_budgets_gib", "tuner.vram_budgets_gib", "report.target_gpu.vram_gib",
               "gpu.emulate_free_gib"]


@pytest.mark.faults
@pytest.mark.parametrize("key", BUDGET_KEYS)
@pytest.mark.parametrize(("gib", "refusal"), [(1e-05, "1e-05 is less than the minimum of 0.01"),
                                              (0, "0 is less than the minimum of 0.01"),
                                              (-16, "-16 is less than the minimum of 0.01"),
                                              (5000, "5000 is greater than the maximum of 4096")])
def test_a_budget_out_of_range_is_refused_naming_the_key(demo, key, gib, refusal):
    """The issue's 1e-05 GiB was accepted, then failed on an internal missing file (.../vram-1e-05GiB_...)."""
    msg = _schema_error(_budget(demo, key, gib))
    assert refusal in msg and "['" + key.split(".")[-1] + "']" in msg


@pytest.mark.parametrize("key", BUDGET_KEYS)
@pytest.mark.parametrize("gib", [0.01, 0.5, 15.5, 4096])
def test_budgets_in_range_are_accepted(demo, key, gib):
    validate(_budget(demo, key, gib), SCHEMA)
    check_config(demo)


@pytest.mark.faults
@pytest.mark.parametrize(("section", "key", "value", "refusal"), [
    ("perplexity", "ctx", [512, 2 ** 31], "2147483648 is greater than the maximum of 16777216"),
    ("kld", "chunks", 2 ** 31, "2147483648 is greater than the maximum of 16777216"),
    ("bench", "repetitions", 0, "0 is less than the minimum of 1"),
    ("bench", "prompt", [2 ** 31], "2147483648 is greater than the maximum of 16777216"),
    ("bench", "batch", [0], "0 is less than the minimum of 1"),
    ("tuner", "gen", 0, "0 is less than the minimum of 1"),
    ("server", "timeout_s", 1e9, "1000000000.0 is greater than the maximum of 86400"),
    ("run", "n_gpu_layers", -2, "-2 is less than the minimum of -1"),
])
def test_numbers_llama_cpp_cannot_take_are_refused_naming_the_key(demo, section, key, value, refusal):
    """2^31 does not fit llama.cpp's int parameters (std::stoi throws); the rest run nothing or forever."""
    demo.setdefault(section, {})[key] = value
    msg = _schema_error(demo)
    assert refusal in msg and f"['{section}']['{key}']" in msg


@pytest.mark.faults
def test_an_integer_written_with_a_decimal_point_is_refused_naming_the_key(demo):
    """JSON Schema counts 512.0 as an integer; the rules would ask for results/.../ctx512.0_kv-f16.json, which no
    rule makes (ctx is [0-9]+), and llama-bench would get -t 8.0."""
    demo["perplexity"]["ctx"] = [512.0, 1024]
    demo["bench"]["threads"] = [8.0]
    demo["bench"]["strategies"] = {"moe": {"n_cpu_moe": [16, 20.0]}}
    validate(demo, SCHEMA)
    msg = _problems(demo)
    assert "perplexity.ctx: 512.0 is an integer written with a decimal point: write 512" in msg
    assert "bench.threads: 8.0 is an integer written with a decimal point: write 8" in msg
    assert "bench.strategies.moe.n_cpu_moe: 20.0 is an integer written with a decimal point: write 20" in msg
    assert len(msg.splitlines()) == 4


@pytest.mark.faults
def test_a_nan_budget_is_refused(demo):
    """No minimum or maximum refuses .nan (every comparison with NaN is false)."""
    demo["report"]["vram_budgets_gib"] = [1, float("nan")]
    validate(demo, SCHEMA)
    assert "report.vram_budgets_gib: nan is not a finite number" in _problems(demo)


def test_numbers_as_the_schema_types_them_pass(demo):
    demo["gpu"] = {"emulate_free_gib": 15.5}
    demo["bench"]["noise_threshold_pct"] = 5  # a number key given an int is fine
    demo["kld"]["kv"] = "q8_0"  # oneOf: one KV type, or a list
    validate(demo, SCHEMA)
    check_config(demo)


@pytest.mark.faults
def test_chunks_by_ctx_keys_are_context_lengths(demo):
    demo["perplexity"]["chunks_by_ctx"] = {"long": 4}
    assert "does not match '^[0-9]+$'" in _schema_error(copy.deepcopy(demo))
    assert "perplexity.chunks_by_ctx: long is not one of perplexity.ctx ([512, 1024])" in _problems(demo)


def test_the_docs_say_the_schemas_defaults():
    """Where README.md or docs/ write `section.key: value` and call it the default, it is the schema's default
    (README said the baseline logits were deleted after use while kld.keep_logits defaults to true)."""
    import re

    import yaml

    from ggufbench.core.config import defaults
    from tests.support import REPO

    found = []
    for doc in [REPO / "README.md", REPO / "config/README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for m in re.finditer(r"`([a-z_]+)\.([a-z_]+): ([^`]+)`[^.;]{0,40}", doc.read_text()):
            if "default" in m.group(0):
                section, key, value = m.groups()
                found.append((doc.name, section, key))
                assert defaults(section).get(key) == yaml.safe_load(value), (doc.name, m.group(0))
    assert ("README.md", "kld", "keep_logits") in found


def test_a_tasks_section_gets_its_defaults_and_names_what_it_refers_to(demo, tmp_path):
    demo["tasks"] = {"sets": {"cloze": {"cloze": {"corpus": "pydocs"}}}}
    validate(demo, SCHEMA)
    check_config(demo)
    t = demo["tasks"]
    assert (t["kv"], t["base_kv"], t["ctx"], t["noise_floor"]) == (["f16"], "f16", 512, {"batch": 512, "ubatch": 64})
    assert t["sets"]["cloze"]["cloze"]["choices"] == 3 and t["sets"]["cloze"]["cloze"]["context_sentences"] == 2
    demo["tasks"] = {"sets": {"c": {"cloze": {"corpus": "wiki"}}, "arc": {"local": {"path": str(tmp_path / "no.bin")}}},
                     "quants": ["Q5_K_M"]}
    validate(demo, SCHEMA)
    with pytest.raises(ConfigError) as e:
        check_config(demo)
    msg = str(e.value)
    assert "tasks.sets.c.cloze.corpus: 'wiki' is not a key of corpora (pydocs)" in msg
    assert "tasks.quants: 'Q5_K_M' is a quant of no model" in msg
    assert "tasks.sets.arc.local.path:" in msg and "does not exist" in msg
    two_kinds = {**demo, "tasks": {"sets": {"x": {"cloze": {"corpus": "pydocs"}, "local": {"path": "a"}}}}}
    assert "['tasks']['sets']['x']" in _schema_error(two_kinds)


def test_a_strategy_on_some_quants_names_quants_the_models_have(demo):
    demo["bench"]["strategies"]["b4096"]["quants"] = ["Q4_K_M", "Q5_K_S"]
    validate(demo, SCHEMA)
    with pytest.raises(ConfigError, match=r"bench.strategies.b4096.quants: 'Q5_K_S' is not a quant of any model"):
        check_config(demo)


@pytest.mark.faults
@pytest.mark.parametrize("key", ["prompt", "gen"])
def test_an_empty_list_of_prompt_or_generation_sizes_is_refused(demo, key):
    """The served context is the largest prompt plus the largest generation: an empty list left the report's
    serve_contexts with max() of nothing (ValueError); a list of 0 still measures none of it."""
    demo["bench"][key] = []
    with pytest.raises(WorkflowError, match=r"\[\] should be non-empty|is too short"):
        validate(demo, SCHEMA)


def test_kv_cost_is_checked_by_key(demo):
    demo["kv_cost"] = {"corpus": "pydocs", "ctx": [512], "kv": ["f16", "q8_0"], "ref_kv": "f16", "quants": ["Q3"],
                       "bins": [128, 0], "chunks_by_ctx": {"1024": 2}}
    with pytest.raises(ConfigError) as e:
        check_config(demo)
    msg = str(e.value)
    assert "kv_cost.bins: [128, 0] must increase from 0" in msg
    assert "kv_cost.quants: 'Q3' is not a quant of any model" in msg
    assert "kv_cost.kv: 'f16' is kv_cost.ref_kv" in msg
    assert "kv_cost.chunks_by_ctx: 1024 is not one of kv_cost.ctx ([512])" in msg


def test_tasks_without_a_noise_floor_validate(demo):
    """tasks.noise_floor: null (no rerun) is what the schema offers: validation filled defaults into it and raised
    a raw AttributeError ('NoneType' object has no attribute 'setdefault') before any job."""
    demo["tasks"] = {"sets": {"cloze": {"cloze": {"corpus": "pydocs"}}}, "noise_floor": None}
    validate(demo, SCHEMA)
    check_config(demo)
    assert demo["tasks"]["noise_floor"] is None and demo["tasks"]["kv"] == ["f16"]
