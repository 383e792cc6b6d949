"""Build configuration: CMake arguments, toolkit checks, architecture resolution, build keys."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ConfigError
from ggufbench.llamacpp.build import build_key, check_toolkit, cmake_args, parse_version, resolve_cuda_architectures
from tests.support import DATA

IDENT = {"kind": "pypi_sdist", "package": "llama-cpp-python", "version": "0.3.36",
         "commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f"}


TC = {"cxx_version": "c++ (Debian 12.2.0-14+deb12u1) 12.2.0", "nvcc_version": None}


def test_blackwell_needs_cuda_12_8():
    with pytest.raises(ConfigError, match=r"nvcc 12\.4 cannot compile: CUDA 12\.8 or newer"):
        check_toolkit("120", "12.4")
    check_toolkit("120", "12.8")
    check_toolkit("120", "13.0")
    check_toolkit("90", "12.4")  # Hopper is fine with 12.4
    with pytest.raises(ConfigError):
        check_toolkit("90;120", "12.6")


def test_native_without_nvml_is_left_to_nvcc():
    archs, how = resolve_cuda_architectures("native")  # no GPU on CI machines
    assert archs == "native" and how.startswith("left to nvcc (no GPU")
    assert resolve_cuda_architectures("120") == ("120", "config")


def test_cmake_args_cuda_and_commit():
    args = cmake_args({"cuda": True, "resolved_cuda_architectures": "120", "fa_all_quants": True,
                       "native": True, "cmake_args": ["-DGGML_CUDA_F16=ON"]}, IDENT)
    assert "-DGGML_CUDA=ON" in args and "-DCMAKE_CUDA_ARCHITECTURES=120" in args
    assert "-DGGML_CUDA_FA_ALL_QUANTS=ON" in args and "-DGGML_NATIVE=ON" in args
    assert "-DLLAMA_BUILD_COMMIT=0c1e57098bba" in args
    assert args[-1] == "-DGGML_CUDA_F16=ON"
    cpu = cmake_args({"native": False}, {**IDENT, "commit": None})
    assert "-DGGML_NATIVE=OFF" in cpu and not any("CUDA" in a or "BUILD_COMMIT" in a for a in cpu)


def test_build_key_changes_with_flags_source_and_toolchain():
    a = cmake_args({"native": True}, IDENT)
    key = build_key(IDENT, a, TC)
    assert build_key(IDENT, a, TC) == key
    assert build_key(IDENT, a + ["-DGGML_AVX512=OFF"], TC) != key
    assert build_key({**IDENT, "version": "0.3.37"}, a, TC) != key
    assert build_key(IDENT, a, {**TC, "cxx_version": "c++ 13.3.0"}) != key


def test_parse_version(capture):
    v = parse_version(capture("version.txt"))
    assert v["version"] == "0.5.0-dev"
    assert v["build_number"] == 1
    assert v["binary_commit"] == "0c1e570"
    assert v["built_with"] == "GNU 12.2.0"
    assert v["target"].startswith("Linux")


def test_parse_version_full_target(capture):
    assert capture("version.txt").splitlines()[1] == "built with GNU 12.2.0 for Linux x86_64"
    assert parse_version(capture("version.txt"))["target"] == "Linux x86_64"


def test_parse_version_of_a_2025_llama_cpp():
    """4227c9b (llama-cpp-python 0.3.16) printed the build number alone, and its llama-bench had no --version."""
    v = parse_version((DATA / "cpu-0.3.16" / "version.txt").read_text())
    assert v["version"] == "1" and v["build_number"] == 1 and v["binary_commit"] == "4227c9be4268"
    assert v["built_with"].startswith("cc (Debian 12.2.0") and v["target"] == "x86_64-linux-gnu"


def test_parse_version_unrecognised_text():
    assert parse_version("llama_bench: error: failed to load model 'nonexist.gguf'\n") == {}


# The build cache: an entry reused only when its binaries are as they were cached ----------------------------

def cached_build(tmp_path, recorded: bool = True):
    from ggufbench.core.cache import fingerprint
    from ggufbench.core.io import write_json
    from ggufbench.llamacpp.build import TOOLS

    done = tmp_path / "builds/k1"
    (done / "bin").mkdir(parents=True)
    for t in TOOLS:
        (done / "bin" / t).write_bytes(b"\x7fELF" + t.encode() * 5000)
    files = {f"bin/{t}": fingerprint(done / "bin" / t) for t in TOOLS} if recorded else None
    write_json(done / "build.json", {"key": "k1", **({"files": files} if files else {})})
    return done


def test_a_cached_build_as_it_was_cached_is_reused(tmp_path):
    from ggufbench.llamacpp.build import _reusable

    assert _reusable(cached_build(tmp_path), tmp_path / "log") and not (tmp_path / "log").exists()


@pytest.mark.faults
def test_a_truncated_binary_in_the_build_cache_is_built_again_not_reused(tmp_path):
    """The issue's case: a truncated llama-perplexity in the cache was reused and died of SIGSEGV."""
    from ggufbench.llamacpp.build import _reusable

    done = cached_build(tmp_path)
    tool = done / "bin/llama-perplexity"
    tool.write_bytes(tool.read_bytes()[:1000])
    log = tmp_path / "log"
    assert not _reusable(done, log) and not done.exists()
    assert f"cached build {done}: bin/llama-perplexity is 1,000 bytes, its record says 80,004; removed it" in \
        log.read_text()


def test_a_build_cached_before_binaries_were_recorded_is_recorded_on_reuse(tmp_path):
    import json

    from ggufbench.llamacpp.build import TOOLS, _reusable

    done = cached_build(tmp_path, recorded=False)
    assert _reusable(done, None)
    assert sorted(json.loads((done / "build.json").read_text())["files"]) == sorted(f"bin/{t}" for t in TOOLS)


@pytest.mark.faults
def test_a_cached_build_missing_a_binary_is_built_again(tmp_path):
    from ggufbench.llamacpp.build import _reusable

    done = cached_build(tmp_path, recorded=False)
    (done / "bin/llama-server").unlink()
    assert not _reusable(done, tmp_path / "log") and not done.exists()
    assert "bin/llama-server is missing" in (tmp_path / "log").read_text()


# A build's tools under results/builds/: verified and put back by the job that runs one (ensure_tool) ----------

def built(tmp_path, spec: bool = True):
    """A build record beside its copied tools, as build_llama_cpp leaves them, over the cache entry above."""
    import shutil

    from ggufbench.core.io import write_json
    from ggufbench.llamacpp.build import TOOLS

    done = cached_build(tmp_path)
    out = tmp_path / "results/builds/cpu"
    shutil.copytree(done / "bin", out / "bin")
    write_json(out / "build.json", {"build": "cpu", "key": "k1", "cache_path": str(done), "tools": list(TOOLS),
                                    **({"spec": {"source": {"local": {"path": "/nowhere"}}}} if spec else {})})
    return out, done


@pytest.mark.faults
@pytest.mark.parametrize("damage", ["deleted", "truncated", "changed"])
def test_a_damaged_tool_is_put_back_from_the_build_cache_by_the_job_that_runs_it(tmp_path, damage):
    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path)
    tool = out / "bin/llama-bench"
    good = tool.read_bytes()
    if damage == "deleted":
        tool.unlink()
    elif damage == "truncated":
        tool.write_bytes(good[:100])
    else:
        tool.write_bytes(good[:-1] + b"!")
    log = tmp_path / "log"
    assert ensure_tool(out / "build.json", "llama-bench", log) == tool
    assert tool.read_bytes() == good
    assert f"{tool} " in log.read_text() and "put back from the build cache" in log.read_text()
    log.unlink()
    assert ensure_tool(out / "build.json", "llama-bench", log) == tool and not log.exists()  # as built: quiet


def test_a_tool_the_build_lacks_is_named(tmp_path):
    from ggufbench.core.errors import ToolFailed
    from ggufbench.llamacpp.build import ensure_tool

    out, _ = built(tmp_path)
    with pytest.raises(ToolFailed, match="build cpu has no llama-fit-params"):
        ensure_tool(out / "build.json", "llama-fit-params")


@pytest.mark.faults
def test_a_tool_gone_with_its_cache_entry_from_a_record_without_its_spec_says_how_to_rebuild(tmp_path):
    import shutil

    from ggufbench.core.errors import ToolFailed
    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path, spec=False)
    (out / "bin/llama-bench").unlink()
    shutil.rmtree(done)
    with pytest.raises(ToolFailed, match=r"neither it nor the build cache entry .* rebuild: snakemake --forcerun "
                                         r"build_llama_cpp"):
        ensure_tool(out / "build.json", "llama-bench")
