"""The speed jobs: a bench strategy's llama-bench calls, and the offload tuner's probes, each with its NVML VRAM
peak; a call that does not fit in device memory is a result, not a failure."""

from __future__ import annotations

import re
import time

from ..core.errors import DoesNotFit, ToolFailed
from ..core.io import read_json, record, tool_info, write_json
from ..llamacpp.bench_output import parse_bench_jsonl, summarize
from ..llamacpp.cli import bench_cmd
from ..llamacpp.emulate import emulated_gpu
from ..llamacpp.features import features
from ..llamacpp.gguf import gguf_metadata
from ..llamacpp.nvml import VramSampler, gpu_info
from ..llamacpp.oom import bench_needs_diagnosis, memory_failure
from ..llamacpp.run import ToolRun, run_tool
from ..sources.manifest import model_path
from .bench_calls import invocations, planned_rows
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


def bench_job(tool, build_json, manifest, plan: dict, strategy: str, spec: dict, threads: int, run: dict, gpu: dict,
              out, log) -> dict:
    """One offload strategy of one quant: a llama-bench call per setting (N of --n-cpu-moe, KV type, -b, -ub,
    context), each with its own NVML VRAM peak; threads, prompt/gen sizes and depth swept inside each call. A
    setting that does not fit in device memory is a result: its rows say "does not fit", with why and the
    memory free then, and the other settings go on."""
    build = read_json(build_json)
    gpu_build = build.get("backend") == "CUDA"
    thread_list = plan.get("threads") or [threads]
    model = model_path(manifest)
    rows, calls, outputs = [], [], []
    with emulated_gpu(gpu.get("emulate_free_gib"), gpu_build) as emulation:
        for inv in invocations(plan, strategy, spec):
            cmd = bench_cmd(tool, model, plan, inv, thread_list, build, run)
            setting = {k: inv[k] for k in inv if k != "strategy"}
            t0 = time.monotonic()
            with VramSampler() as vram:
                try:
                    r, why = run_bench(cmd, log), None
                except DoesNotFit as e:
                    r, why = None, str(e)
                    outputs.append(e.output)
            mem = vram.result.to_dict()
            call = {"cmd": [str(c) for c in cmd], "wall_seconds": time.monotonic() - t0, "vram": mem,
                    "status": "measured" if r else "does not fit"}
            _log_vram(log, call["status"], vram.result)
            if r is None:
                call["reason"] = why
                rows += [{**t, "status": "does not fit", "reason": why, "strategy": strategy, "setting": setting,
                          "vram": mem} for t in planned_rows(plan, inv, thread_list, gpu_build, run)]
            else:
                outputs.append(r.output)
                for row in parse_bench_jsonl(r.stdout):
                    row = summarize(row, plan["discard_first"], plan["noise_threshold_pct"])
                    rows.append({**row, "status": "measured", "strategy": strategy, "setting": setting, "vram": mem})
            calls.append(call)
    prov = provenance(build_json, manifest, None, "\n".join(outputs), emulation)
    if not prov["gpu_name"]:
        prov["gpu_name"] = next((x["gpu_info"] for x in rows if x.get("gpu_info")), None)
    rec = record("bench", prov, {**{k2: v2 for k2, v2 in plan.items() if k2 != "strategies"}, "strategy": strategy,
                                 "strategy_spec": spec, "threads": thread_list, **run},
                 {"rows": rows, "calls": calls}, tool_info(calls[0]["cmd"], sum(c["wall_seconds"] for c in calls)))
    write_json(out, rec)
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


def tune_job(tool, build_json, manifest, budget_gib: float, context: int, plan: dict, contexts: list[int],
             threads: int, run: dict, out, log) -> dict:
    """The fastest offload setting within a VRAM budget at a served context (tuner.py), each probe measured with
    the GPU showing only the budget free; then, if tuner.threads lists them, the winner's thread curve."""
    model = model_path(manifest)
    meta = gguf_metadata(model)
    info = gpu_info()
    build = read_json(build_json)
    params = {"budget_gib": budget_gib, "context": context, **plan, "threads": threads, **run}
    why_not = (f"{info['reason']}: the tuner needs measured VRAM" if not info["available"] else
               f"{meta['architecture']} has no experts to offload" if not meta.get("expert_count") else None)
    if why_not:
        rec = record("tune", provenance(build_json, manifest), params, {"status": "not measured", "reason": why_not})
        write_json(out, rec)
        return rec
    # A prompt is processed too: its compute buffers (for a 152K vocabulary the logits of one ubatch alone are
    # ~300 MiB) are part of what a server needs, and a generation-only probe would miss them (measured: tg-only
    # probes read 296 MiB under the pp512+tg64 calls at the same N on the H200).
    probe_plan = {"prompt": [int(plan["prompt"])], "gen": [int(plan["gen"])], "repetitions": plan["repetitions"],
                  "contexts": [context] if contexts else [], "depth": [0], "extra_args": []}

    def call(setting: dict, thread_list: list[int]):
        inv = {**setting, "context": context if contexts else None}
        cmd = bench_cmd(tool, model, probe_plan, inv, thread_list, build, run)
        with VramSampler() as vram:
            try:
                return run_bench(cmd, log), vram, None
            except DoesNotFit as e:
                return None, vram, str(e)

    def measure(setting: dict) -> Probe:
        r, vram, why = call(setting, [threads])
        _log_vram(log, "measured" if r else "does not fit", vram.result)
        if r is None:
            return Probe(setting.get("n_cpu_moe"), None, None, status="does not fit", reason=why,
                         free_mib=vram.result.free_before_mib, setting=setting)
        p = tune_probe(setting.get("n_cpu_moe"), r.stdout, vram.result.peak_delta_mib, log)
        p.setting = setting
        return p

    with emulated_gpu(budget_gib, build.get("backend") == "CUDA", at_most=True) as emulation:
        res = tune(measure, int(meta["block_count"]), budget_gib * 1024, fit=features(build)["fit"])
        curve = []
        if res.best is not None and plan.get("threads"):
            r, vram, why = call(res.best.setting, list(plan["threads"]))
            rows = parse_bench_jsonl(r.stdout) if r is not None else []
            curve = [{**summarize(x, True, 5.0), "vram_peak_mib": vram.result.peak_delta_mib} for x in rows]
    rec = record("tune", provenance(build_json, manifest, emulation=emulation), params,
                 {"status": "measured", **res.to_dict(), "thread_curve": curve})
    write_json(out, rec)
    return rec
