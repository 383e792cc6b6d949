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
