"""llamacpp.features: a build's features read from its tools' real --help (tests/data/cpu-0.3.36, and
tests/data/cpu-0.3.16 for a 2025 llama.cpp), the flags made from them, and the refusals by name for what a build
lacks."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ConfigError
from ggufbench.llamacpp.bench_output import parse_bench_jsonl
from ggufbench.llamacpp.features import (
    check_source,
    features,
    flash_attn_args,
    no_mmap_args,
    parse_features,
    ran_without_mmap,
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
    assert f["no_mmap"] == f["bench_no_mmap"] == "load_mode"  # -lm none in every tool
    assert f["cache_types"] == ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
    assert {"Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K", "F16", "MXFP4_MOE"} <= set(f["quantize_types"])


def test_a_2025_llama_cpp_reads_as_what_it_had():
    """Before -fa took a value (a bare -fa, llama-bench's -fa 0|1), before --fit and llama-bench's -ncmoe; the
    same KV cache types; MXFP4_MOE already a quantize type."""
    f = OLD["features"]
    assert f["flash_attn"] == "flag" and f["bench_flash_attn"] == "0|1"
    assert f["fit"] is False and f["bench_n_cpu_moe"] is False
    assert (f["no_mmap"], f["bench_no_mmap"]) == ("no-mmap", "mmp")  # --no-mmap; llama-bench -mmp 0
    assert f["kv_unified"] == "flag" and features_of(NEW)["kv_unified"] == "auto"  # -kvu for the task modes
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


def test_no_mmap_in_each_builds_spelling():
    """0c1e570 replaced the mmap switch with load modes (-lm none: llama-model-loader maps only for auto, mmap and
    mmap+mlock); 4227c9b has --no-mmap and llama-bench's -mmp 0. A build that has neither is refused by name."""
    new = {"build": "cpu", "features": features_of(NEW)}
    assert no_mmap_args(new, "k") == no_mmap_args(new, "k", "llama-bench") == ["-lm", "none"]
    assert no_mmap_args(OLD, "k") == ["--no-mmap"] and no_mmap_args(OLD, "k", "llama-bench") == ["-mmp", "0"]
    neither = {"build": "x", "features": {**features_of(NEW), "no_mmap": None, "bench_no_mmap": None}}
    with pytest.raises(ConfigError, match=r"bench strategy 'c7': no_mmap, but build x .*'s llama-bench has no way"):
        no_mmap_args(neither, "bench strategy 'c7'", "llama-bench")


def test_a_record_probed_before_the_no_mmap_forms_were_read():
    """Such a record (the demo's build.json made before) says what else the build had: without --fit it is a
    2025 llama.cpp, from before the load modes."""
    old = {k: v for k, v in features_of(OLD_DIR).items() if k not in ("no_mmap", "bench_no_mmap")}
    new = {k: v for k, v in features_of(NEW).items() if k not in ("no_mmap", "bench_no_mmap")}
    assert no_mmap_args({"features": old}, "k", "llama-bench") == ["-mmp", "0"]
    assert no_mmap_args({"features": new}, "k", "llama-bench") == ["-lm", "none"]
    assert features({})["no_mmap"] == "load_mode"  # no record of features at all: the newest llama.cpp


def test_a_llama_bench_row_says_whether_it_mapped_the_model():
    """The fields each version writes (tests/data: 4227c9b's use_mmap, 0c1e570's load_mode), as llama-bench wrote
    them and as a table mixing both holds them (NaN where a version has no such field)."""
    old = parse_bench_jsonl((OLD_DIR / "bench_q8_0.jsonl").read_text())[0]
    new = parse_bench_jsonl((NEW / "bench_q8_0.jsonl").read_text())[0]
    assert old["use_mmap"] is True and new["load_mode"] == "auto" and "use_mmap" not in new
    assert not ran_without_mmap(old) and not ran_without_mmap(new)
    assert ran_without_mmap({**old, "use_mmap": False}) and ran_without_mmap({**new, "load_mode": "none"})
    assert not ran_without_mmap({**new, "use_mmap": float("nan")}) and ran_without_mmap({"use_mmap": 0})
