"""What each measurement job does, with plain arguments (the rule scripts in scripts/ only map
snakemake.input/output/params onto these). Each writes one JSON record:
{"stage", "provenance", "params", "result", "tool": {cmd, wall_seconds}}.
"""

from __future__ import annotations

import platform
import re
import socket
import time
from pathlib import Path

from . import bench as bench_mod
from . import kld as kld_mod
from .config import kv_pair
from .emulate import emulated_gpu
from .errors import DoesNotFit, ToolFailed
from .models import gguf_metadata, model_path, model_provenance
from .nvml import VramSampler, gpu_info
from .oom import bench_needs_diagnosis, memory_failure
from .perplexity import parse_kld, parse_perplexity
from .runner import ToolRun, read_json, run_tool, write_json
from .tuner import Probe, tune


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices_in_output(text: str) -> list[str]:
    """GPU names llama.cpp reports it used, e.g. 'Device 0: NVIDIA H200, compute capability 9.0'."""
    return re.findall(r"Device \d+: (.+?), compute capability", text)


def ran_on_cuda(text: str) -> bool:
    """llama.cpp's own word that the CUDA backend was used: system_info's `CUDA :` entry (llama-perplexity),
    ggml_cuda_init finding a device, or llama-bench's `"backends": "CUDA"`."""
    return bool(re.search(r'CUDA :|"backends": "[^"]*CUDA|ggml_cuda_init: found [1-9]', text))


def provenance(build_json: str | Path, manifest: str | Path, corpus_json: str | Path | None = None,
               tool_output: str = "", emulation: dict | None = None) -> dict:
    b = read_json(build_json)
    prov = {**model_provenance(manifest), "build": b["build"], "build_key": b.get("key"),
            "llama_cpp_version": b.get("version"), "llama_cpp_commit": b.get("commit"),
            "backend": b.get("backend"), "host": socket.gethostname(), "cpu_name": cpu_name()}
    info = gpu_info()
    gpus = devices_in_output(tool_output) or [g["name"] for g in info["gpus"]]
    prov["gpu_name"] = ", ".join(gpus) if gpus else None
    prov["gpu_driver"] = info.get("driver")
    if prov["backend"] == "CUDA" and tool_output and not (info["available"] and ran_on_cuda(tool_output)):
        raise ToolFailed("a CUDA build ran but no GPU was seen (NVML: "
                         f"{info.get('reason', 'ok')}; llama.cpp's system_info lists no CUDA backend): it "
                         "ran on the CPU, so its numbers would be mislabelled")
    emulation = emulation or {"emulated": False, "reason": "not a GPU job"}
    prov["gpu_emulated_free_mib"] = emulation.get("target_free_mib")  # None: the real GPU's free memory
    prov["gpu_emulation"] = emulation
    if corpus_json:
        c = read_json(corpus_json)
        prov.update(corpus=c["name"], corpus_sha256=c["sha256"], corpus_source=c["source"])
    return prov


def run_measurement(cmd: list, log, build: dict, gpu: dict) -> tuple[ToolRun, dict]:
    """Run a llama-perplexity pass, on the emulated smaller GPU when gpu.emulate_free_gib asks; returns the run and
    the emulation record its result carries."""
    with emulated_gpu(gpu.get("emulate_free_gib"), build.get("backend") == "CUDA") as emulation:
        return run_tool(cmd, log), emulation


def _common_args(tool: str, model: Path, build: dict, ctx: int, kv: str, threads: int, run: dict) -> list:
    k, v = kv_pair(kv)
    args = [tool, "-m", model, "-c", ctx, "-t", threads, "-fa", run.get("flash_attn", "on"),
            "-ctk", k, "-ctv", v]
    if build.get("backend") == "CUDA":
        args += ["-ngl", run.get("n_gpu_layers", 99)]
    return args


def perplexity_job(tool, build_json, manifest, corpus, corpus_json, ctx: int, kv: str, chunks, threads: int,
                   run: dict, gpu: dict, out, log) -> dict:
    build = read_json(build_json)
    cmd = _common_args(tool, model_path(manifest), build, ctx, kv, threads, run) + ["-f", corpus]
    if chunks:
        cmd += ["--chunks", chunks]
    r, emulation = run_measurement(cmd, log, build, gpu)
    result = parse_perplexity(r.output)
    k, v = kv_pair(kv)
    record = {"stage": "perplexity",
              "provenance": provenance(build_json, manifest, corpus_json, r.output, emulation),
              "params": {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": chunks, "threads": threads,
                         **run},
              "result": result.to_dict(), "tool": {"cmd": [str(c) for c in cmd], "wall_seconds": r.wall_seconds}}
    write_json(out, record)
    return record


def perplexity_text(corpus: Path) -> bytes:
    """The text llama-perplexity tokenizes from `-f corpus`: the file's bytes less one trailing newline (common's
    -f handler drops it); no escape processing (perplexity.cpp sets params.escape = false; measured: a `\\t` in
    the demo corpus stays two characters in its logits file's tokens)."""
    data = Path(corpus).read_bytes()
    return data[:-1] if data.endswith(b"\n") else data


def tokenize_ids(tokenize_bin: Path, model: Path, corpus: Path, log) -> list[int]:
    """The token ids llama-perplexity will see: same tokenizer, BOS as the model wants, the text as it reads it
    (perplexity_text: llama-tokenize runs with --no-escape on it), special-token text left as text (its
    parse_special is off); vocab-only load."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=Path(log).parent, prefix=".tokenize-", suffix=".txt") as f:
        f.write(perplexity_text(corpus))
        f.flush()
        r = run_tool([tokenize_bin, "-m", model, "-f", f.name, "--ids", "--log-disable", "--no-parse-special",
                      "--no-escape"], log, separate_stdout=True)
    m = re.search(r"\[([\d,\s]*)\]", r.stdout)
    if not m:
        raise ToolFailed("llama-tokenize printed no [ids] list")
    return [int(x) for x in m.group(1).split(",") if x.strip()]


def count_tokens(tokenize_bin: Path, model: Path, corpus: Path, log) -> int:
    return len(tokenize_ids(tokenize_bin, model, corpus, log))


def kld_base_job(tool, build_json, manifest, corpus, corpus_json, ctx: int, kv: str, chunks: int,
                 max_logits_gib: float, threads: int, run: dict, gpu: dict, logits_out, out, log) -> dict:
    """Baseline pass: writes logits under a temporary name, renamed only when complete and exactly sized."""
    build = read_json(build_json)
    model = model_path(manifest)
    logits_out = Path(logits_out)
    logits_out.parent.mkdir(parents=True, exist_ok=True)
    n_vocab = gguf_metadata(model)["n_vocab"]
    n_tokens = count_tokens(Path(tool).with_name("llama-tokenize"), model, Path(corpus), log)
    fc = kld_mod.forecast(ctx, n_vocab, n_tokens, chunks, max_logits_gib, logits_out.parent)
    with open(log, "a") as f:
        f.write(f"# logits forecast: {fc.to_dict()}\n")
    kld_mod.check_forecast(fc)
    partial = logits_out.with_name(f".{logits_out.name}.partial")
    partial.unlink(missing_ok=True)
    cmd = _common_args(tool, model, build, ctx, kv, threads, run) + [
        "-f", corpus, "--chunks", chunks, "--kl-divergence-base", partial]
    try:
        r, emulation = run_measurement(cmd, log, build, gpu)
        result = parse_perplexity(r.output)
        written = partial.stat().st_size if partial.exists() else None
        kld_mod.check_logits_file(partial, fc)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(logits_out)
    k, v = kv_pair(kv)
    record = {"stage": "kld_base", "provenance": provenance(build_json, manifest, corpus_json, r.output, emulation),
              "params": {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": chunks, "threads": threads,
                         **run},
              "result": {**result.to_dict(), "logits_bytes_forecast": fc.bytes, "logits_bytes_written": written,
                         "forecast": fc.to_dict()},
              "tool": {"cmd": [str(c) for c in cmd], "wall_seconds": r.wall_seconds}}
    write_json(out, record)
    return record


def kld_job(tool, build_json, manifest, base_record, logits, ctx: int, kv: str, threads: int, run: dict, gpu: dict,
            out, log) -> dict:
    build = read_json(build_json)
    base = read_json(base_record)
    cmd = _common_args(tool, model_path(manifest), build, ctx, kv, threads, run) + [
        "--kl-divergence-base", logits, "--kl-divergence"]
    r, emulation = run_measurement(cmd, log, build, gpu)
    result = parse_kld(r.output)
    k, v = kv_pair(kv)
    prov = provenance(build_json, manifest, None, r.output, emulation)
    bp = base["provenance"]
    prov.update(corpus=bp.get("corpus"), corpus_sha256=bp.get("corpus_sha256"), corpus_source=bp.get("corpus_source"),
                baseline_quant=bp["quant"], baseline_sha256=bp["file_sha256"], baseline_kv=base["params"]["kv"])
    record = {"stage": "kld", "provenance": prov,
              "params": {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": base["params"]["chunks"],
                         "threads": threads, **run},
              "result": result.flat(), "tool": {"cmd": [str(c) for c in cmd], "wall_seconds": r.wall_seconds}}
    write_json(out, record)
    return record


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
        for inv in bench_mod.invocations(plan, strategy, spec):
            cmd = bench_mod.bench_cmd(tool, model, plan, inv, thread_list, gpu_build, run)
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
                          "vram": mem} for t in bench_mod.planned_rows(plan, inv, thread_list, gpu_build, run)]
            else:
                outputs.append(r.output)
                for row in bench_mod.parse_bench_jsonl(r.stdout):
                    row = bench_mod.summarize(row, plan.get("discard_first", True),
                                              plan.get("noise_threshold_pct", 5.0))
                    rows.append({**row, "status": "measured", "strategy": strategy, "setting": setting, "vram": mem})
            calls.append(call)
    prov = provenance(build_json, manifest, None, "\n".join(outputs), emulation)
    if not prov["gpu_name"]:
        prov["gpu_name"] = next((x["gpu_info"] for x in rows if x.get("gpu_info")), None)
    record = {"stage": "bench", "provenance": prov,
              "params": {**{k2: v2 for k2, v2 in plan.items() if k2 != "strategies"}, "strategy": strategy,
                         "strategy_spec": spec, "threads": thread_list, **run},
              "result": {"rows": rows, "calls": calls},
              "tool": {"cmd": calls[0]["cmd"], "wall_seconds": sum(c["wall_seconds"] for c in calls)}}
    write_json(out, record)
    return record


def tune_probe(n_cpu_moe: int, jsonl: str, vram_mib: float, log) -> Probe:
    """One tuner probe from a llama-bench call's JSONL: the generation row's median speed (and the prompt row's,
    when there is one) with the call's VRAM peak."""
    rows = [bench_mod.summarize(x, True, 5.0) for x in bench_mod.parse_bench_jsonl(jsonl)]
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
        record = {"stage": "tune", "provenance": provenance(build_json, manifest), "params": params,
                  "result": {"status": "not measured", "reason": why_not}}
        write_json(out, record)
        return record
    # A prompt is processed too: its compute buffers (for a 152K vocabulary the logits of one ubatch alone are
    # ~300 MiB) are part of what a server needs, and a generation-only probe would miss them (measured: tg-only
    # probes read 296 MiB under the pp512+tg64 calls at the same N on the H200).
    probe_plan = {"prompt": [int(plan.get("prompt", 512))], "gen": [int(plan.get("gen", 64))],
                  "repetitions": plan.get("repetitions", 3), "contexts": [context] if contexts else []}

    def call(setting: dict, thread_list: list[int]):
        inv = {**setting, "context": context if contexts else None}
        cmd = bench_mod.bench_cmd(tool, model, probe_plan, inv, thread_list, True, run)
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
        res = tune(measure, int(meta["block_count"]), budget_gib * 1024)
        curve = []
        if res.best is not None and plan.get("threads"):
            r, vram, why = call(res.best.setting, list(plan["threads"]))
            rows = bench_mod.parse_bench_jsonl(r.stdout) if r is not None else []
            curve = [{**bench_mod.summarize(x, True, 5.0), "vram_peak_mib": vram.result.peak_delta_mib} for x in rows]
    record = {"stage": "tune", "provenance": provenance(build_json, manifest, emulation=emulation), "params": params,
              "result": {"status": "measured", **res.to_dict(), "thread_curve": curve}}
    write_json(out, record)
    return record


def _plain(v):
    """A table value as JSON writes it: numpy scalars as Python numbers, NaN as None."""
    if isinstance(v, dict | list | str) or v is None:
        return v
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and v != v else v


def server_check_job(server_bin, build_json, records: dict, manifests: dict[str, str], config: dict, model: str,
                     budget_gib: float, context: int, server: dict, run: dict, out, log) -> dict:
    """The recommendation for one VRAM budget at one served context, proven: the candidates that fit, in pick
    order (recommend.ranked), are started as llama-server commands until one starts and answers a completion.
    On a CUDA build the GPU shows only the budget free while it runs (the emulation), so "it started" means it
    starts on a card of that size. A candidate that does not fit is recorded and the next is tried."""
    from . import recommend
    from .server import check, paste_ready, server_args
    from .tables import record_tables

    build = read_json(build_json)
    gpu_build = build.get("backend") == "CUDA"
    tables = record_tables(records)
    c = recommend.candidates(tables, config, model, build["build"], context)
    ranked = recommend.ranked(c, budget_gib) if not c.empty else []
    attempts, chosen = [], None
    with emulated_gpu(budget_gib if gpu_build else None, gpu_build, at_most=True) as emulation:
        for cand in ranked[: server["max_attempts"]]:
            args = server_args(model_path(manifests[cand["quant"]]), context, cand["spec"], cand["type_k"],
                               cand["type_v"], cand["threads"], run, gpu_build)
            attempt = {"quant": cand["quant"], "kv": cand["kv"], "strategy": cand["strategy"],
                       "threads": _plain(cand["threads"]), "need_bytes": _plain(cand["need_bytes"]),
                       "basis": cand["basis"], "command": paste_ready(server_bin, args)}
            try:
                proof = check(server_bin, args, server["prompt"], server["n_predict"], server["timeout_s"], log)
            except DoesNotFit as e:
                attempts.append({**attempt, "status": "does not fit", "reason": str(e)})
                continue
            attempts.append({**attempt, "status": "started", **proof})
            chosen = cand
            break
    status = ("started" if chosen is not None else "nothing fits" if not ranked else "none started")
    first = chosen if chosen is not None else ranked[0] if ranked else None
    quant = first["quant"] if first is not None else recommend.baseline(config, model)
    prov = provenance(build_json, manifests[quant], None, "", emulation)
    rec = None
    if chosen is not None:
        rec = {k: _plain(chosen[k]) for k in (
            "quant", "kv", "type_k", "type_v", "strategy", "threads", "spec", "source", "bench_strategy", "tg",
            "tg_lo", "tg_hi", "pp", "need_bytes", "basis", "kld", "kld_u", "kld_p99_9", "ppl", "ppl_u",
            "file_size_bytes")}
    record = {"stage": "server", "provenance": prov,
              "params": {"budget_gib": budget_gib, "context": context, **server, **run},
              "result": {"status": status, "recommendation": rec, "n_candidates": len(c), "n_fit": len(ranked),
                         "command": attempts[-1]["command"] if chosen is not None else None, "attempts": attempts},
              "tool": {"cmd": attempts[-1]["cmd"] if chosen is not None else None,
                       "wall_seconds": sum(a.get("load_seconds", 0) for a in attempts)}}
    write_json(out, record)
    return record
