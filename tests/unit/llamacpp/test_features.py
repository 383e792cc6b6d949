"""llamacpp.features: a build's features read from its tools' real --help (tests/data/cpu-0.3.36, and
tests/data/cpu-0.3.16 for a 2025 llama.cpp), the flags made from them, and the refusals by name for what a build
lacks."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ConfigError
from ggufbench.llamacpp.features import (
    check_source,
    flash_attn_args,
    parse_features,
    require_cache_types,
    require_fit,
    require_quantize_type,
)
from tests.support import DATA

NEW = DATA / "cpu-0.3.36"
OLD_DIR = DATA / "cpu-0.3.16"  # llama-cpp-python 0.3.16's llama.cpp, 4227c9b (2025-08-14)


def features_of(d):
    return parse_features(*((d / f"help_{t}.txt").read_text() for t in
                            ("llama-perplexity", "llama-bench", "llama-quantize")))


OLD = {"build": "previous", "commit": "4227c9be4268", "features": features_of(OLD_DIR)}


def test_the_current_llama_cpp_reads_as_the_newest():
    f = features_of(NEW)
    assert f["flash_attn"] == f["bench_flash_attn"] == "on|off|auto" and f["fit"] and f["bench_n_cpu_moe"]
    assert f["cache_types"] == ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
    assert {"Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K", "F16", "MXFP4_MOE"} <= set(f["quantize_types"])


def test_a_2025_llama_cpp_reads_as_what_it_had():
    """Before -fa took a value (a bare -fa, llama-bench's -fa 0|1), before --fit and llama-bench's -ncmoe; the
    same KV cache types; MXFP4_MOE already a quantize type."""
    f = OLD["features"]
    assert f["flash_attn"] == "flag" and f["bench_flash_attn"] == "0|1"
    assert f["fit"] is False and f["bench_n_cpu_moe"] is False
    assert f["cache_types"] == features_of(NEW)["cache_types"]
    assert {"Q8_0", "Q4_K_M", "Q2_K", "F16", "MXFP4_MOE"} <= set(f["quantize_types"])


def test_flash_attention_in_each_builds_form():
    new = {"build": "cpu", "features": features_of(NEW)}
    assert flash_attn_args(new, "on") == ["-fa", "on"] and flash_attn_args(new, "auto") == ["-fa", "auto"]
    assert flash_attn_args(OLD, "on") == ["-fa"] and flash_attn_args(OLD, "off") == []
    assert flash_attn_args(OLD, "on", "llama-bench") == ["-fa", "1"]
    with pytest.raises(ConfigError, match=r"run.flash_attn: 'auto'.*build previous \(llama.cpp 4227c9be4268\)"):
        flash_attn_args(OLD, "auto")


def test_what_a_build_lacks_is_refused_by_name():
    new = {"build": "cpu", "commit": "0c1e57098bba", "features": features_of(NEW)}
    require_cache_types(new, ["q8_0-f16"], "perplexity.kv")
    with pytest.raises(ConfigError, match=r"perplexity.kv: KV cache type 'q5_9'"):
        require_cache_types(new, ["q5_9"], "perplexity.kv")
    with pytest.raises(ConfigError, match=r"'Q9_K' is not a type build cpu"):
        require_quantize_type(new, "Q9_K", "models.m.quants.x.quantize")
    require_fit(new, "bench strategy 'fit'")
    with pytest.raises(ConfigError, match=r"bench strategy 'fit': a --fit setting, but build previous"):
        require_fit(OLD, "bench strategy 'fit'")


def test_a_source_below_the_floor_is_refused_before_compiling(tmp_path):
    (tmp_path / "common").mkdir()
    (tmp_path / "common/arg.cpp").write_text('{"--override-tensor", "-ot"}\n')
    with pytest.raises(ConfigError, match=r"too old for ggufbench: it lacks llama-perplexity's KL divergence"):
        check_source(tmp_path, "builds.old")
