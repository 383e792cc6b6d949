"""The speed jobs: a bench strategy's llama-bench calls, and the offload tuner's probes, each with its NVML VRAM
peak; a call that does not fit in device memory is a result, not a failure."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..core.errors import DoesNotFit, ToolFailed
from ..core.io import record, tool_info, write_json
from ..core.job import Job
from ..llamacpp.bench_output import parse_bench_jsonl, summarize
from ..llamacpp.cli import bench_cmd
from ..llamacpp.emulate import emulated_gpu
from ..llamacpp.features import features
from ..llamacpp.gguf import gguf_metadata
from ..llamacpp.nvml import VramPeak, VramSampler, gpu_info
from ..llamacpp.oom import bench_needs_diagnosis, memory_failure
from ..llamacpp.run import ToolRun, run_tool
from ..sources.manifest import model_path
from .bench_calls import invocations, planned_rows
from .load import LoadSampler, load_verdict, log_load
from .provenance import provenance
from .tuner import Probe, tune


def run_bench(cmd: list, log) -> ToolRun:
    """A llama-bench call; DoesNotFit when it failed for device memory. llama-bench silences llama.cpp's log, so
    a failure that only says "failed to load model", "failed to create context" or "CUDA error" is run once
    more with -v, whose error lines say whether memory was the cause (tests/data/cuda-h200-oom)."""
    try:
        return run_tool(cmd, log, separate_stdout=True)
    except ToolFailed as e:
        why = memory_failure(e.output)
        if why is None and bench_needs_diagnosis(e.output):
            why = _diagnose_verbose(cmd, log)
        if why is None:
            raise
        raise DoesNotFit(why, e.output, e.returncode) from e


def _diagnose_verbose(cmd: list, log) -> str | None:
    with open(log, "a") as f:
        f.write("# llama-bench gave no reason (its log is silenced): the same call again with -v -r 1\n")
    try:
        r = run_tool([*cmd, "-v", "-r", "1"], None, separate_stdout=True)
    except ToolFailed as e:
        text = e.output
    else:
        raise ToolFailed("llama-bench failed, but the same call with -v ran: the failure did not repeat (another "
                         f"process freeing memory?); see {log}", r.output, 0)
    lines = text.splitlines()
    keep = [ln for ln in lines if re.search(r"error|failed|out of memory|MiB free", ln)][-40:]
    with open(log, "a") as f:
        f.write("# its error lines:\n" + "\n".join(keep) + "\n")
    return memory_failure(text)


def _log_vram(log, status: str, vram) -> None:
    """The call's outcome and VRAM in the job's log too: a job stopped before its record is written leaves them."""
    with open(log, "a") as f:
        f.write(f"# {status}; VRAM peak {vram.peak_delta_mib} MiB, free before {vram.free_before_mib} MiB\n")


@dataclass
class BenchCall:
    """One llama-bench call as measured: its run (None when it did not fit, `why` saying so), the VRAM sampled
    through it and the machine's load during it."""

    cmd: list
    run: ToolRun | None
    why: str | None
    output: str           # what the tool printed (also when it did not fit: the reason is in it)
    vram: VramPeak
    load: dict
    loaded: bool
    load_reason: str
    wall_seconds: float

    @property
    def status(self) -> str:
        return "measured" if self.run is not None else "does not fit"


def measured_call(job: Job, cmd: list) -> BenchCall:
    """A llama-bench call with its VRAM peak (NVML) and the load other processes put on the machine meanwhile
    (their CPU time makes its speed not the setting's own); both go to the job's log as they come."""
    t0 = time.monotonic()
    with VramSampler() as vram, LoadSampler() as load:
        try:
            r = run_bench(cmd, job.log)
            why, output = None, r.output
        except DoesNotFit as e:
            r, why, output = None, str(e), e.output
    ld = load.result.to_dict()
    loaded, load_why = load_verdict(ld)
    call = BenchCall([str(c) for c in cmd], r, why, output, vram.result, ld, loaded, load_why, time.monotonic() - t0)
    _log_vram(job.log, call.status, vram.result)
    log_load(job.log, ld)
    return call


def bench_job(job: Job, *, manifest, bench: dict, strategy: str, spec: dict) -> dict:
    """One offload strategy of one quant: a llama-bench call per setting (N of --n-cpu-moe, KV type, -b, -ub,
    context), each with its own NVML VRAM peak and machine load; threads, prompt/gen sizes and depth swept inside
    each call. A setting that does not fit in device memory is a result: its rows say "does not fit", with why and
    the memory free then, and the other settings go on. bench: the measured bench settings (params); how the
    repetitions are summarised comes from the config (bench.discard_first, noise_threshold_pct: not measured)."""
    bench = {**bench, **{k: job.setting(f"bench.{k}") for k in ("discard_first", "noise_threshold_pct")}}
    thread_list = bench.get("threads") or [job.threads]
    model = model_path(manifest)
    rows, calls, outputs = [], [], []
    with emulated_gpu(job.gpu.get("emulate_free_gib"), job.gpu_build) as emulation:
        for inv in invocations(bench, strategy, spec):
            c = measured_call(job, bench_cmd(job.tool, model, bench=bench, inv=inv, threads=thread_list,
                                             build=job.build, run=job.run))
            outputs.append(c.output)
            setting = {k: inv[k] for k in inv if k != "strategy"}
            mem, ld = c.vram.to_dict(), {"load": c.load, "loaded": c.loaded}
            calls.append({"cmd": c.cmd, "wall_seconds": c.wall_seconds, "vram": mem, **ld, "status": c.status,
                          **({"reason": c.why} if c.run is None else {})})
            common = {"strategy": strategy, "setting": setting, "vram": mem, **ld}
            if c.run is None:
                rows += [{**t, "status": "does not fit", "reason": c.why, **common}
                         for t in planned_rows(bench, inv, thread_list, job.gpu_build, job.run)]
            else:
                rows += [{**summarize(row, bench["discard_first"], bench["noise_threshold_pct"]), "status": "measured",
                          **common} for row in parse_bench_jsonl(c.run.stdout)]
    prov = provenance(job.build_json, manifest, None, "\n".join(outputs), emulation)
    if not prov["gpu_name"]:
        prov["gpu_name"] = next((x["gpu_info"] for x in rows if x.get("gpu_info")), None)
    rec = record("bench", prov, {**{k: v for k, v in bench.items() if k != "strategies"}, "strategy": strategy,
                                 "strategy_spec": spec, "threads": thread_list, **job.run},
                 {"rows": rows, "calls": calls}, tool_info(calls[0]["cmd"], sum(c["wall_seconds"] for c in calls)))
    write_json(job.out["record"], rec)
    return rec


def tune_probe(n_cpu_moe: int, jsonl: str, vram_mib: float, log) -> Probe:
    """One tuner probe from a llama-bench call's JSONL: the generation row's median speed (and the prompt row's,
    when there is one) with the call's VRAM peak."""
    rows = [summarize(x, True, 5.0) for x in parse_bench_jsonl(jsonl)]
    tg = next((x for x in rows if x.get("n_gen")), None)
    if tg is None:
        raise ToolFailed(f"llama-bench exited 0 but wrote no generation row for -ncmoe {n_cpu_moe} (see {log})")
    pp = next((x["median_ts"] for x in rows if x.get("n_prompt") and not x.get("n_gen")), None)
    return Probe(n_cpu_moe, tg["median_ts"], vram_mib, pp)


def _not_tunable(model) -> str | None:
    """Why the tuner cannot run here: no measured VRAM (no GPU), or nothing to offload (no experts)."""
    info = gpu_info()
    if not info["available"]:
        return f"{info['reason']}: the tuner needs measured VRAM"
    meta = gguf_metadata(model)
    return None if meta.get("expert_count") else f"{meta['architecture']} has no experts to offload"


def tune_job(job: Job, *, manifest, budget_gib: float, context: int, tuner: dict, contexts: list[int]) -> dict:
    """The fastest offload setting within a VRAM budget at a served context (tuner.py), each probe measured with
    the GPU showing only the budget free; then, if tuner.threads lists them, the winner's thread curve."""
    params = {"budget_gib": budget_gib, "context": context, **tuner, "threads": job.threads, **job.run}
    model = model_path(manifest)
    why_not = _not_tunable(model)
    if why_not:
        rec = record("tune", provenance(job.build_json, manifest), params,
                     {"status": "not measured", "reason": why_not})
        write_json(job.out["record"], rec)
        return rec
    # A prompt is processed too: its compute buffers (for a 152K vocabulary the logits of one ubatch alone are
    # ~300 MiB) are part of what a server needs, and a generation-only probe would miss them (measured: tg-only
    # probes read 296 MiB under the pp512+tg64 calls at the same N on the H200).
    probe_bench = {"prompt": [int(tuner["prompt"])], "gen": [int(tuner["gen"])], "repetitions": tuner["repetitions"],
                  "contexts": [context] if contexts else [], "depth": [0], "extra_args": []}
    calls: list[dict] = []  # each llama-bench call's load (tuner.Probe has no place for it)

    def call(setting: dict, thread_list: list[int]) -> BenchCall:
        inv = {**setting, "context": context if contexts else None}
        c = measured_call(job, bench_cmd(job.tool, model, bench=probe_bench, inv=inv, threads=thread_list,
                                         build=job.build, run=job.run))
        calls.append({"setting": setting, "threads": thread_list, "status": c.status, "load": c.load,
                      "loaded": c.loaded, "load_reason": c.load_reason})
        return c

    def measure(setting: dict) -> Probe:
        c = call(setting, [job.threads])
        if c.run is None:
            return Probe(setting.get("n_cpu_moe"), None, None, status="does not fit", reason=c.why,
                         free_mib=c.vram.free_before_mib, setting=setting)
        p = tune_probe(setting.get("n_cpu_moe"), c.run.stdout, c.vram.peak_delta_mib, job.log)
        p.setting = setting
        return p

    with emulated_gpu(budget_gib, job.gpu_build, at_most=True) as emulation:
        res = tune(measure, int(gguf_metadata(model)["block_count"]), budget_gib * 1024, fit=features(job.build)["fit"])
        curve = []
        if res.best is not None and tuner.get("threads"):
            c = call(res.best.setting, list(tuner["threads"]))
            rows = parse_bench_jsonl(c.run.stdout) if c.run is not None else []
            curve = [{**summarize(x, True, 5.0), "vram_peak_mib": c.vram.peak_delta_mib, "load": c.load,
                      "loaded": c.loaded} for x in rows]
    rec = record("tune", provenance(job.build_json, manifest, emulation=emulation), params,
                 {"status": "measured", **res.to_dict(), "thread_curve": curve, "calls": calls})
    write_json(job.out["record"], rec)
    return rec
