"""Build configuration: CMake arguments, toolkit checks, architecture resolution, build keys."""

from __future__ import annotations

import os

import pytest

from ggufbench.core.errors import ConfigError
from ggufbench.llamacpp.build import build_key, check_toolkit, cmake_args, parse_version, resolve_cuda_architectures
from tests.support import DATA
from tests.unit.core.test_cache import read_only  # a folder really read-only, also for root

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

def tool_script(t: str, pad: int = 0) -> bytes:
    """A stand-in for a llama.cpp tool: a script that prints the real tool's captured --version and --help."""
    return (f"#!/bin/sh\ncase \"$1\" in\n  --version) cat '{DATA}/cpu-0.3.36/version.txt' ;;\n"
            f"  --help) cat '{DATA}/cpu-0.3.36/help_{t}.txt' 2>/dev/null ;;\nesac\n# {'x' * pad}\n").encode()


def cached_build(cache, key: str = "k1", recorded: bool = True):
    """A finished build in the cache folder `cache`, as build_llama_cpp leaves one: cache/builds/<key>."""
    from ggufbench.core.cache import fingerprint
    from ggufbench.core.io import write_json
    from ggufbench.llamacpp.build import TOOLS

    done = cache / "builds" / key
    (done / "bin").mkdir(parents=True)
    for n, t in enumerate(TOOLS):
        (done / "bin" / t).write_bytes(tool_script(t, 1000 * (n + 1)))
        (done / "bin" / t).chmod(0o755)
    files = {f"bin/{t}": fingerprint(done / "bin" / t) for t in TOOLS} if recorded else None
    write_json(done / "build.json", {"key": key, **({"files": files} if files else {})})
    return done


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The cache these tests use ($GGUFBENCH_CACHE, as a job sees it): never the machine's own."""
    monkeypatch.setenv("GGUFBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def locks(monkeypatch):
    """Every lock build.py asks for, in order."""
    from ggufbench.llamacpp import build

    taken, real = [], build.exclusive

    def spy(lock, *args, **kwargs):
        taken.append(lock)
        return real(lock, *args, **kwargs)

    monkeypatch.setattr(build, "exclusive", spy)
    return taken


def test_a_cached_build_as_it_was_cached_is_reused(cache, tmp_path):
    from ggufbench.llamacpp.build import _reusable

    assert _reusable(cached_build(cache), tmp_path / "log") and not (tmp_path / "log").exists()


@pytest.mark.faults
def test_a_truncated_binary_in_the_build_cache_is_built_again_not_reused(cache, tmp_path):
    """The issue's case: a truncated llama-perplexity in the cache was reused and died of SIGSEGV."""
    from ggufbench.llamacpp.build import _reusable

    done = cached_build(cache)
    tool = done / "bin/llama-perplexity"
    size = tool.stat().st_size
    tool.write_bytes(tool.read_bytes()[:1000])
    log = tmp_path / "log"
    assert not _reusable(done, log) and not done.exists()
    assert f"cached build {done}: bin/llama-perplexity is 1,000 bytes, its record says {size:,}; removed it" in \
        log.read_text()


def test_a_build_cached_before_binaries_were_recorded_is_recorded_on_reuse(cache):
    import json

    from ggufbench.llamacpp.build import TOOLS, _reusable

    done = cached_build(cache, recorded=False)
    assert _reusable(done, None)
    assert sorted(json.loads((done / "build.json").read_text())["files"]) == sorted(f"bin/{t}" for t in TOOLS)


@pytest.mark.faults
def test_a_cached_build_missing_a_binary_is_built_again(cache, tmp_path):
    from ggufbench.llamacpp.build import _reusable

    done = cached_build(cache, recorded=False)
    (done / "bin/llama-server").unlink()
    assert not _reusable(done, tmp_path / "log") and not done.exists()
    assert "bin/llama-server is missing" in (tmp_path / "log").read_text()


# A build's tools under results/builds/: verified and put back by the job that runs one (ensure_tool) ----------

def built(tmp_path, cache, spec: bool = True, noted: bool = True):
    """A build record beside its copied tools, as build_llama_cpp leaves them, over the cache entry above. noted:
    the record notes each tool's size and sha256 (`files`), as records do since issue 25; else only cache_path."""
    import shutil

    from ggufbench.core.io import read_json, write_json
    from ggufbench.llamacpp.build import TOOLS

    done = cached_build(cache)
    out = tmp_path / "results/builds/cpu"
    shutil.copytree(done / "bin", out / "bin")
    write_json(out / "build.json", {"build": "cpu", "key": "k1", "cache_path": str(done), "tools": list(TOOLS),
                                    **({"files": read_json(done / "build.json")["files"]} if noted else {}),
                                    **({"spec": {"source": {"local": {"path": "/nowhere"}}}} if spec else {})})
    return out, done


@pytest.mark.faults
@pytest.mark.parametrize("noted", [True, False], ids=["record", "record-before-issue-25"])
@pytest.mark.parametrize("damage", ["deleted", "truncated", "changed"])
def test_a_damaged_tool_is_put_back_from_the_build_cache_by_the_job_that_runs_it(tmp_path, cache, damage, noted):
    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path, cache, noted=noted)
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
    assert tool.read_bytes() == good and os.access(tool, os.X_OK)
    assert f"{tool} " in log.read_text() and f"put back from the build cache ({done})" in log.read_text()
    log.unlink()
    assert ensure_tool(out / "build.json", "llama-bench", log) == tool and not log.exists()  # as built: quiet


def test_a_tool_the_build_lacks_is_named(tmp_path, cache):
    from ggufbench.core.errors import ToolFailed
    from ggufbench.llamacpp.build import ensure_tool

    out, _ = built(tmp_path, cache)
    with pytest.raises(ToolFailed, match="build cpu has no llama-fit-params"):
        ensure_tool(out / "build.json", "llama-fit-params")


@pytest.mark.faults
def test_a_tool_gone_with_its_cache_entry_from_a_record_without_its_spec_says_how_to_rebuild(tmp_path, cache):
    import shutil

    from ggufbench.core.errors import ToolFailed
    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path, cache, spec=False)
    (out / "bin/llama-bench").unlink()
    shutil.rmtree(done)
    with pytest.raises(ToolFailed, match=r"neither it nor the build cache entry .* rebuild: snakemake --forcerun "
                                         r"build_llama_cpp"):
        ensure_tool(out / "build.json", "llama-bench")


# Issue 25: the cache is not a single point of failure (read-only, absent, moved) ---------------------------------

@pytest.mark.faults
@pytest.mark.parametrize("state", ["read-only", "absent", "read-only, tool touched"])
def test_an_intact_tool_is_checked_against_its_build_record_without_the_cache(tmp_path, cache, locks, state):
    """The issue's case: with GGUFBENCH_CACHE read-only every job failed on the key's lock, though the tool under
    results/builds/ was intact. Now the tool is checked against build.json alone (a touched one: by its sha256)."""
    import shutil

    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path, cache)
    tool = out / "bin/llama-perplexity"
    log = tmp_path / "log"
    if state == "absent":
        shutil.rmtree(cache)
        assert ensure_tool(out / "build.json", "llama-perplexity", log) == tool
        assert not cache.exists()
    else:
        if "touched" in state:
            os.utime(tool, ns=(1, 1))
        with read_only(cache):
            assert ensure_tool(out / "build.json", "llama-perplexity", log) == tool
        assert not (done.parent / ".k1.lock").exists()
    assert locks == [] and not log.exists()


@pytest.mark.faults
def test_a_record_from_before_issue_25_is_checked_against_a_read_only_cache(tmp_path, cache):
    """Such a record notes no tool: its check reads the cache entry, which a read-only cache still gives."""
    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path, cache, noted=False)
    log = tmp_path / "log"
    with read_only(cache):
        assert ensure_tool(out / "build.json", "llama-perplexity", log) == out / "bin/llama-perplexity"
    assert not log.exists() and not (done.parent / ".k1.lock").exists()


@pytest.mark.faults
def test_a_deleted_tool_is_put_back_from_a_read_only_cache_that_holds_it(tmp_path, cache, locks):
    """Putting a tool back only reads the cache: a read-only one that holds the build intact gives it, without the
    key's lock (the copy is checked against the record as it is made)."""
    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path, cache)
    tool = out / "bin/llama-bench"
    good = tool.read_bytes()
    tool.unlink()
    log = tmp_path / "log"
    with read_only(cache):
        assert ensure_tool(out / "build.json", "llama-bench", log) == tool
    assert tool.read_bytes() == good
    assert f"{tool} is missing: put back from the build cache ({done})" in log.read_text()
    assert not (done.parent / ".k1.lock").exists()


@pytest.mark.faults
@pytest.mark.parametrize("entry", ["lost", "truncated"])
def test_a_tool_a_read_only_cache_cannot_give_back_names_the_cache_and_what_to_do(tmp_path, cache, entry):
    """A repair that must write the cache (its entry lost or damaged: build it again) and cannot: a named error
    with what to do, not a PermissionError from the lock; the cache is left as it is."""
    import shutil

    from ggufbench.core.cache import CacheNotWritable
    from ggufbench.llamacpp.build import ensure_tool

    out, done = built(tmp_path, cache)
    (out / "bin/llama-bench").unlink()
    if entry == "lost":
        shutil.rmtree(done)
    else:
        (done / "bin/llama-bench").write_bytes(b"#!/bin/sh\n")
    log = tmp_path / "log"
    with read_only(cache):
        with pytest.raises(CacheNotWritable) as err:
            ensure_tool(out / "build.json", "llama-bench", log)
    assert str(err.value).startswith(f"{out / 'bin/llama-bench'} is missing, and the build cache has no intact "
                                     f"build of key k1 ({done}) to put it back from, so it must be built again "
                                     f"there, and the cache folder {cache} cannot be written (")
    assert str(err.value).endswith(f"Make {cache} writable, or set GGUFBENCH_CACHE (or the config's cache_dir) to "
                                   "a writable folder, then rerun")
    assert (entry == "lost") != done.exists()  # a damaged entry is not removed: it cannot be
    if entry == "truncated":
        assert f"cached build {done}: bin/llama-bench is 10 bytes" in log.read_text()


@pytest.mark.faults
@pytest.mark.parametrize("noted", [True, False], ids=["record", "record-before-issue-25"])
def test_a_tool_is_put_back_from_the_cache_where_it_was_moved_not_where_it_was(tmp_path, noted, monkeypatch):
    """The issue's case: with the cache moved, a job rebuilt llama.cpp for 11 minutes into the old path, ignoring
    GGUFBENCH_CACHE. Now the entry is found by its key in the cache named now, and the old path stays gone."""
    from ggufbench.llamacpp.build import ensure_tool

    old, new = tmp_path / "old-cache", tmp_path / "disk2/cache"
    out, done = built(tmp_path, old, noted=noted)
    new.parent.mkdir()
    old.rename(new)
    monkeypatch.setenv("GGUFBENCH_CACHE", str(new))
    tool = out / "bin/llama-server"
    good = tool.read_bytes()
    tool.unlink()
    log = tmp_path / "log"
    assert ensure_tool(out / "build.json", "llama-server", log) == tool and tool.read_bytes() == good
    assert f"put back from the build cache ({new / 'builds/k1'})" in log.read_text()
    assert not old.exists()


# build_llama_cpp over a stand-in for fetching and compiling: the cache's part of it, for real --------------------

SPEC = {"source": {"local": {"path": "/llama.cpp"}}, "native": False}
FULL_TC = {**TC, "cmake": "cmake version 3.25.1", "generator": "Ninja", "cxx": "/usr/bin/c++", "nvcc": None,
           "platform": "Linux", "machine": "x86_64"}


@pytest.fixture
def compiles(tmp_path, monkeypatch):
    """build_llama_cpp with a fixed source and toolchain, whose compile writes tool_script stand-ins; yields the
    list of the entries it compiled. The build key is the real one."""
    import json

    from ggufbench.core.cache import fingerprint
    from ggufbench.llamacpp import build

    made = []

    def compile_(src, generator, args, done, jobs, log):
        work = done.with_name(f"{done.name}.work-{os.getpid()}")
        (work / "bin").mkdir(parents=True)
        for t in build.TOOLS:
            (work / "bin" / t).write_bytes(tool_script(t, 10 * len(made)))
            (work / "bin" / t).chmod(0o755)
        files = {f"bin/{t}": fingerprint(work / "bin" / t) for t in build.TOOLS}
        (work / "build.json").write_text(json.dumps({"key": done.name, "files": files}))
        work.rename(done)
        made.append(done)
        return files

    src = tmp_path / "llama.cpp"
    src.mkdir()
    monkeypatch.setattr(build, "fetch_source", lambda source, cache, log=None: (src, IDENT))
    monkeypatch.setattr(build, "toolchain", lambda cuda: dict(FULL_TC))
    monkeypatch.setattr(build, "_compile", compile_)
    return made


def the_key():
    return build_key(IDENT, cmake_args(SPEC, IDENT), FULL_TC)


def test_the_build_record_notes_each_tool_and_a_job_checks_it_there_alone(tmp_path, cache, compiles, locks):
    from ggufbench.core.cache import fingerprint
    from ggufbench.core.io import write_json
    from ggufbench.llamacpp.build import TOOLS, build_llama_cpp, ensure_tool

    out = tmp_path / "results/builds/cpu"
    rec = build_llama_cpp("cpu", SPEC, out, jobs=1, log=tmp_path / "log", cache=cache)
    assert compiles == [cache / "builds" / the_key()] and not rec["reused_from_cache"]
    assert rec["files"] == {f"bin/{t}": fingerprint(out / "bin" / t) for t in TOOLS}
    assert rec["version"] == "0.5.0-dev" and rec["features"]["flash_attn"] == "on|off|auto"  # the stand-ins ran
    write_json(out / "build.json", rec)
    locks.clear()
    for t in TOOLS:
        assert ensure_tool(out / "build.json", t) == out / "bin" / t
    assert locks == []
    again = build_llama_cpp("cpu", SPEC, tmp_path / "other", jobs=1, cache=cache)
    assert again["reused_from_cache"] and again["files"] == rec["files"] and len(compiles) == 1


@pytest.mark.faults
def test_an_identical_build_is_reused_from_a_read_only_cache(tmp_path, cache, compiles):
    from ggufbench.llamacpp.build import build_llama_cpp

    first = build_llama_cpp("cpu", SPEC, tmp_path / "a", jobs=1, cache=cache)
    (cache / "builds" / f".{the_key()}.lock").unlink()
    log = tmp_path / "log"
    with read_only(cache):
        rec = build_llama_cpp("cpu", SPEC, tmp_path / "b", jobs=1, log=log, cache=cache)
    assert rec["reused_from_cache"] and rec["files"] == first["files"] and len(compiles) == 1
    assert (tmp_path / "b/bin/llama-bench").read_bytes() == (tmp_path / "a/bin/llama-bench").read_bytes()
    assert f"the build cache {cache} cannot be written" in log.read_text()
    assert not (cache / "builds" / f".{the_key()}.lock").exists()


@pytest.mark.faults
def test_a_build_a_read_only_cache_lacks_names_the_cache_and_compiles_nothing(tmp_path, cache, compiles):
    from ggufbench.core.cache import CacheNotWritable
    from ggufbench.llamacpp.build import build_llama_cpp

    with read_only(cache):
        with pytest.raises(CacheNotWritable, match=rf"build cpu \(key {the_key()}\) is not in the build cache as it "
                                                   rf"was cached .*, so it must be built there, and the cache folder "
                                                   rf"{cache} cannot be written"):
            build_llama_cpp("cpu", SPEC, tmp_path / "a", jobs=1, cache=cache)
    assert compiles == [] and not (tmp_path / "a/bin").exists()


@pytest.mark.faults
def test_a_build_lost_with_the_moved_cache_is_built_again_in_the_new_place(tmp_path, compiles, monkeypatch):
    """Moved, and the entry did not come along: the job builds it again in the cache named now (same key), not at the
    path its record names."""
    import shutil

    from ggufbench.core.io import write_json
    from ggufbench.llamacpp.build import build_llama_cpp, ensure_tool

    old, new = tmp_path / "old-cache", tmp_path / "new-cache"
    out = tmp_path / "results/builds/cpu"
    write_json(out / "build.json", build_llama_cpp("cpu", SPEC, out, jobs=1, cache=old))
    shutil.rmtree(old)
    monkeypatch.setenv("GGUFBENCH_CACHE", str(new))
    (out / "bin/llama-quantize").unlink()
    log = tmp_path / "log"
    assert ensure_tool(out / "build.json", "llama-quantize", log).is_file()
    assert compiles == [old / "builds" / the_key(), new / "builds" / the_key()] and not old.exists()
    assert f"the build cache {new} has no intact build cpu (key {the_key()}); building it again there" in \
        log.read_text()
    log.unlink()  # built again: other bytes than the record notes, the same key; accepted, quietly
    assert ensure_tool(out / "build.json", "llama-quantize", log).is_file() and not log.exists()
    (out / "bin/llama-bench").unlink()
    ensure_tool(out / "build.json", "llama-bench", log)
    assert "put back from the build cache" in log.read_text() and "same key, other bytes" in log.read_text()



# The KV-cost scorer (ggufbench-kvscore), built beside the tools ----------------------------------------------------

def test_the_scorers_source_is_part_of_the_build_key(tmp_path, monkeypatch):
    import shutil

    from ggufbench.llamacpp import build

    a = cmake_args({"native": True}, IDENT)
    key = build_key(IDENT, a, TC)
    copy = tmp_path / "kvscore"
    shutil.copytree(build.SCORER_DIR, copy)
    monkeypatch.setattr(build, "SCORER_DIR", copy)
    assert build_key(IDENT, a, TC) == key  # the same bytes elsewhere: the same build
    (copy / "kvscore.cpp").write_text((copy / "kvscore.cpp").read_text() + "\n// changed\n")
    assert build_key(IDENT, a, TC) != key
    # the folder is not keyed, only its contents; its path goes to CMake beside the keyed arguments
    assert build.scorer_cmake_arg() == f"-DCMAKE_PROJECT_llama.cpp_INCLUDE={copy}/kvscore.cmake"
    assert not any("kvscore" in x for x in a)


@pytest.mark.parametrize("scorer_compiles", [True, False], ids=["scorer", "scorer-fails"])
def test_the_scorer_is_one_more_target_and_its_failure_costs_no_other_tool(tmp_path, monkeypatch, scorer_compiles):
    """One configure of llama.cpp's own tree with the scorer's CMake file included from outside it; the tools, then
    the scorer on its own: a scorer that does not compile is noted in the cache entry (`missing`), not fatal."""
    import json
    from pathlib import Path

    from ggufbench.core.errors import ToolFailed
    from ggufbench.llamacpp import build

    calls = []

    def fake_cmake(cmd, log=None, **kwargs):
        calls.append(cmd)
        if "--build" not in cmd:
            return
        targets = cmd[cmd.index("--target") + 1:]
        if targets == [build.SCORER] and not scorer_compiles:
            raise ToolFailed("cmake exited with status 1; last lines:\nkvscore.cpp:1: error: 'llama_decode' was not "
                             "declared")
        (Path(cmd[2]) / "bin").mkdir(parents=True, exist_ok=True)
        for t in targets:
            (Path(cmd[2]) / "bin" / t).write_bytes(t.encode())

    monkeypatch.setattr(build, "run_tool", fake_cmake)
    src = tmp_path / "llama.cpp"
    (src / "tools/fit-params").mkdir(parents=True)
    done = tmp_path / "builds" / "k"
    log = tmp_path / "log"
    files = build._compile(src, "Ninja", ["-DGGML_NATIVE=OFF"], done, jobs=2, log=log)
    configure, tools, scorer = calls
    assert configure[-2:] == ["-DGGML_NATIVE=OFF", build.scorer_cmake_arg()]
    assert tools[tools.index("--target") + 1:] == [*build.TOOLS, "llama-fit-params"]
    assert scorer[scorer.index("--target") + 1:] == [build.SCORER]
    entry = json.loads((done / "build.json").read_text())
    assert ("bin/ggufbench-kvscore" in files) == scorer_compiles and entry["files"] == files
    assert all(f"bin/{t}" in files for t in build.TOOLS)
    if scorer_compiles:
        assert entry["missing"] == {}
    else:
        assert "it did not compile against this llama.cpp" in entry["missing"][build.SCORER]
        assert "'llama_decode' was not declared" in log.read_text()
        assert build._missing_tools(done) == entry["missing"]


def test_a_build_record_says_whether_it_has_the_scorer(tmp_path, cache, compiles):
    """A build without it (here: one whose compile made only the tools, as a build made before the scorer existed)
    says so in `tools` and features.kvscore, and its tools work as before."""
    from ggufbench.core.io import write_json
    from ggufbench.llamacpp.build import SCORER, build_llama_cpp, ensure_tool

    out = tmp_path / "results/builds/cpu"
    rec = build_llama_cpp("cpu", SPEC, out, jobs=1, cache=cache)
    assert SCORER not in rec["tools"] and rec["features"]["kvscore"] is False and rec["missing_tools"] == {}
    write_json(out / "build.json", rec)
    assert ensure_tool(out / "build.json", "llama-perplexity").is_file()


def test_a_record_made_before_the_scorer_says_how_to_get_it(tmp_path, cache):
    from ggufbench.core.errors import ToolFailed
    from ggufbench.llamacpp.build import SCORER, ensure_tool

    out, _ = built(tmp_path, cache)
    with pytest.raises(ToolFailed, match=r"build cpu has no ggufbench-kvscore \(its tools: .*\): made before ggufbench "
                                         r"built its scorer: rebuild it, snakemake --forcerun build_llama_cpp"):
        ensure_tool(out / "build.json", SCORER)


def test_a_scorer_that_did_not_compile_is_named_with_why(tmp_path, cache):
    from ggufbench.core.errors import ToolFailed
    from ggufbench.core.io import read_json, write_json
    from ggufbench.llamacpp.build import SCORER, ensure_tool

    out, _ = built(tmp_path, cache)
    rec = read_json(out / "build.json")
    write_json(out / "build.json", {**rec, "missing_tools": {SCORER: "it did not compile against this llama.cpp: x"}})
    with pytest.raises(ToolFailed, match="has no ggufbench-kvscore .*: it did not compile against this llama.cpp"):
        ensure_tool(out / "build.json", SCORER)


def test_the_tools_key_is_the_key_as_it_was_before_the_scorer(tmp_path, monkeypatch):
    """A build made before the scorer existed has the key its tools alone give (tools_key): the same llama.cpp built
    again with the scorer compiles them bit for bit, so a record they measured stays valid (core/records.py)."""
    import hashlib
    import json
    import shutil

    from ggufbench.llamacpp import build

    a = cmake_args({"native": True}, IDENT)
    before = {"source": IDENT, "cmake_args": a, "cxx_version": TC["cxx_version"], "nvcc_version": None,
              "tools": build.KEYED_TOOLS}  # build_key's dict until the scorer joined it
    old = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:20]
    assert build_key(IDENT, a, TC, scorer=False) == old != build_key(IDENT, a, TC)
    copy = tmp_path / "kvscore"
    shutil.copytree(build.SCORER_DIR, copy)
    (copy / "target.cmake").write_text("# changed\n")
    monkeypatch.setattr(build, "SCORER_DIR", copy)
    assert build_key(IDENT, a, TC, scorer=False) == old
