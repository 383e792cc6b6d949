"""measure.speed: a tuner probe is one real llama-bench reading (generation and prompt rows), or a named failure; a
bench job records a setting that does not fit in device memory as a result, and fails on any other failure."""

from __future__ import annotations

import sys

import pytest

from ggufbench.core.config import defaults
from ggufbench.core.errors import DoesNotFit, ToolFailed
from ggufbench.core.io import read_json, write_json
from ggufbench.llamacpp import bench_output as bench
from ggufbench.measure.speed import bench_job, tune_probe
from tests.support import DATA
from tests.support.jobs import make_job
from tests.support.models import quant_manifest

BENCH_JSONL = DATA / "cpu-0.3.36/bench_q8_0.jsonl"


def test_a_probe_reads_the_generation_row_and_the_prompt_row_of_real_llama_bench_output():
    text = BENCH_JSONL.read_text()
    rows = {r["test"]: bench.summarize(r, True, 5.0) for r in bench.parse_bench_jsonl(text)}
    p = tune_probe(7, text, 1234.5, "x.log")
    assert (p.n_cpu_moe, p.vram_mib) == (7, 1234.5)
    assert p.tg_ts == rows["tg128"]["median_ts"] and p.pp_ts == rows["pp512"]["median_ts"]
    assert p.tg_ts < p.pp_ts


def test_a_probe_without_a_generation_row_fails_and_names_the_log():
    pp_only = BENCH_JSONL.read_text().splitlines()[0]
    with pytest.raises(ToolFailed, match=r"no generation row for -ncmoe 3 \(see logs/t.log\)"):
        tune_probe(3, pp_only, 10.0, "logs/t.log")


# bench_job: a stand-in llama-bench printing real captures ------------------------------------------------------

OOM = DATA / "cuda-h200-oom"


def bench_stand_in(path, verbose_capture, verbose_exit: int = 1):
    """llama-bench for bench_job: with -ncmoe 0 it fails as the H200 did with too little memory free (exit 1, only
    `failed to load model`, its log silenced); run again with -v it prints `verbose_capture` (the loader's own error
    lines: the H200 capture of the same load) and exits verbose_exit. Any other N prints the CPU capture's JSONL."""
    path.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
if args[args.index("-ncmoe") + 1] == "0":
    verbose = "-v" in args
    sys.stderr.write(open({str(verbose_capture)!r} if verbose else {str(OOM / "bench_all_gpu.err")!r}).read())
    sys.exit({verbose_exit} if verbose else 1)
sys.stdout.write(open({str(BENCH_JSONL)!r}).read())
""")
    path.chmod(0o755)
    return path


def bench_job_of(tool, build, out, log, threads: int = 2):
    """The Job of a bench job: how repetitions are summarised comes from the config (not measured)."""
    summary = {f"bench.{k}": v for k, v in defaults("bench").items() if k in ("discard_first", "noise_threshold_pct")}
    return make_job(tool=tool, build_json=build, run=defaults("run"), out=out, log=log, threads=threads,
                    settings=summary)


def bench_inputs(tmp_path):
    build = tmp_path / "build.json"
    write_json(build, {"build": "cpu", "key": "k1", "version": "0.5.0-dev", "commit": "0c1e570", "backend": "CPU"})
    manifest = quant_manifest(tmp_path, "moe", "Q8_0", {"kind": "synthetic"})
    plan = {**defaults("bench"), "prompt": [512], "gen": [128], "repetitions": 2}
    return build, manifest, plan


def test_a_setting_that_does_not_fit_is_a_result_and_the_other_settings_go_on(tmp_path):
    tool = bench_stand_in(tmp_path / "llama-bench", OOM / "server_all_gpu.err")
    build, manifest, plan = bench_inputs(tmp_path)
    out, log = tmp_path / "bench.json", tmp_path / "bench.log"
    rec = bench_job(bench_job_of(tool, build, out, log), manifest=manifest, bench=plan, strategy="ncmoe",
                    spec={"n_cpu_moe": [0, 8]})
    assert read_json(out)["result"]["calls"] == rec["result"]["calls"]
    why = "cudaMalloc of 2442.40 MiB on device 0 failed: out of memory while loading the model"
    assert [(c["status"], c.get("reason")) for c in rec["result"]["calls"]] == [("does not fit", why),
                                                                                ("measured", None)]
    rows = rec["result"]["rows"]
    assert [(r["setting"]["n_cpu_moe"], r["test"], r["status"]) for r in rows] == [
        (0, "pp512", "does not fit"), (0, "tg128", "does not fit"), (8, "pp512", "measured"), (8, "tg128", "measured")]
    assert all(r["reason"] == why and "median_ts" not in r for r in rows[:2])
    assert all(r["median_ts"] > 0 and r["n_cpu_moe"] == 0 for r in rows[2:])  # llama-bench's own field, from the JSONL
    text = log.read_text()
    assert "with -v -r 1" in text and "cudaMalloc failed: out of memory" in text
    assert text.count("# does not fit; VRAM peak") == 1 and text.count("# measured; VRAM peak") == 1


@pytest.mark.parametrize(("verbose", "verbose_exit", "match"), [
    (BENCH_JSONL, 0, "the same call with -v ran: the failure did not repeat"),
    (DATA / "cpu-0.3.36/fail_missing_model.txt", 1, "llama-bench exited with status 1"),
])
@pytest.mark.faults
def test_a_silent_failure_that_is_not_memory_fails_the_job_and_writes_no_record(tmp_path, verbose, verbose_exit,
                                                                                match):
    """A failure whose -v run succeeds, or names a cause other than memory (a missing model file), is not "does
    not fit": the job fails and writes nothing."""
    tool = bench_stand_in(tmp_path / "llama-bench", verbose, verbose_exit)
    build, manifest, plan = bench_inputs(tmp_path)
    out = tmp_path / "bench.json"
    with pytest.raises(ToolFailed, match=match) as e:
        bench_job(bench_job_of(tool, build, out, tmp_path / "bench.log"), manifest=manifest, bench=plan,
                  strategy="ncmoe", spec={"n_cpu_moe": [8, 0]})
    assert not isinstance(e.value, DoesNotFit) and not out.exists()


# the machine's load per llama-bench call (measure.load) ----------------------------------------------------------

def test_every_tuner_call_records_the_load_it_ran_under(tmp_path, monkeypatch):
    """tune_job's probes and its thread curve: each llama-bench call (a stand-in printing the real CPU capture)
    leaves its load in result.calls, the curve's rows carry it; the GPU and the tuner's search are stood in for."""
    from ggufbench.measure import speed
    from ggufbench.measure.tuner import TuneResult

    tool = tmp_path / "llama-bench"
    tool.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write(open({str(BENCH_JSONL)!r}).read())\n")
    tool.chmod(0o755)
    build, manifest, _ = bench_inputs(tmp_path)
    monkeypatch.setattr(speed, "gpu_info", lambda: {"available": True, "gpus": []})
    monkeypatch.setattr(speed, "gguf_metadata", lambda _: {"architecture": "qwen3moe", "expert_count": 8,
                                                           "block_count": 4})

    def one_probe(measure, n_layer, budget_mib, fit):
        p = measure({"n_cpu_moe": 2})
        return TuneResult(budget_mib, n_layer, p, [p])

    monkeypatch.setattr(speed, "tune", one_probe)
    plan = {**defaults("tuner"), "threads": [1, 2]}
    log = tmp_path / "tune.log"
    job = make_job(tool=tool, build_json=build, run=defaults("run"), out=tmp_path / "t.json", log=log)
    rec = speed.tune_job(job, manifest=manifest, budget_gib=4.0, context=0, tuner=plan, contexts=[])
    calls = rec["result"]["calls"]
    assert [(c["setting"], c["threads"], c["status"]) for c in calls] == [({"n_cpu_moe": 2}, [2], "measured"),
                                                                          ({"n_cpu_moe": 2}, [1, 2], "measured")]
    assert all(c["load"]["available"] and c["loaded"] in (True, False) for c in calls)
    assert all(c["load_reason"].startswith("other processes took ") for c in calls)
    assert [x["load"] for x in rec["result"]["thread_curve"]] == [calls[1]["load"]] * 2
    assert log.read_text().count("other processes took ") == 2


@pytest.fixture(scope="module")
def tiny_model(llama_src, tmp_path_factory):
    """ggufbench.synth's tiny MoE (4 layers, n_embd 64, F16, ~26 MB) and its manifest: a llama-bench call of
    pp32 and tg4 takes a few seconds on 2 shared cores, longer beside a hog."""
    from ggufbench.sources import synthetic_moe as synth
    from ggufbench.sources.manifest import write_manifest

    folder = tmp_path_factory.mktemp("tiny")
    synth.write_synthetic_moe(folder / "tiny.gguf", llama_src / "models" / "ggml-vocab-qwen2.gguf",
                              params=synth.PRESETS["tiny"], seed=0)
    write_manifest(folder / "manifest.json", "tiny", "F16", [folder / "tiny.gguf"], {"kind": "synthetic"})
    return folder / "manifest.json"


@pytest.mark.faults
def test_a_real_llama_bench_call_beside_a_cpu_hog_is_flagged_loaded(tiny_model, llama_bin, tmp_path):
    """Issue 25: speed measured while other work loads the machine was reported clean (noisy False). The same
    bench job, alone and then beside a busy loop on every CPU (children of this test, reaped only after the job,
    so they count as other processes, as a stranger's would): the loaded call says so on every row, in its call
    record and in the job's log, and took a larger share than the call alone."""
    import os
    import subprocess
    import time

    from ggufbench.measure.load import LOADED_SHARE

    n = len(os.sched_getaffinity(0))
    build = tmp_path / "build.json"
    write_json(build, {"build": "cpu", "key": "k1", "version": "0.5.0-dev", "commit": "0c1e570", "backend": "CPU"})
    plan = {**defaults("bench"), "prompt": [32], "gen": [4], "repetitions": 2}

    def job(name: str) -> dict:
        return bench_job(bench_job_of(llama_bin / "llama-bench", build, tmp_path / f"{name}.json",
                                      tmp_path / f"{name}.log", threads=n), manifest=tiny_model, bench=plan,
                         strategy="cpu", spec={})

    alone = job("alone")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)
        beside = job("hog")
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    (c_alone,), (c_hog,) = alone["result"]["calls"], beside["result"]["calls"]
    share = {k: c["load"]["other_cpu_share"] for k, c in (("alone", c_alone), ("hog", c_hog))}
    speed = {k: {r["test"]: r["median_ts"] for r in rec["result"]["rows"]} for k, rec in (("alone", alone),
                                                                                          ("hog", beside))}
    print(f"\nother processes' share of {n} CPUs: {share}; median t/s: {speed}")
    assert c_hog["loaded"] and share["hog"] > max(LOADED_SHARE, share["alone"])
    assert all(r["loaded"] and r["load"] == c_hog["load"] for r in beside["result"]["rows"])
    assert c_alone["loaded"] == (share["alone"] > LOADED_SHARE)  # others' tests may load this machine too
    assert "# LOADED: other processes took" in (tmp_path / "hog.log").read_text()
