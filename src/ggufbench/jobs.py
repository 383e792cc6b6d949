"""What each measurement job does, with plain arguments (the rule scripts in scripts/ only map
snakemake.input/output/params onto these). Each writes one JSON record:
{"stage", "provenance", "params", "result", "tool": {cmd, wall_seconds}}.
"""

from __future__ import annotations

import platform
import re
import socket
from pathlib import Path

from . import bench as bench_mod
from . import kld as kld_mod
from .config import kv_pair
from .errors import ToolFailed
from .models import gguf_metadata, model_path, model_provenance
from .nvml import VramSampler, gpu_info
from .perplexity import parse_kld, parse_perplexity
from .runner import read_json, run_tool, write_json
from .tuner import Probe, tune_n_cpu_moe


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
               tool_output: str = "") -> dict:
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
    if corpus_json:
        c = read_json(corpus_json)
        prov.update(corpus=c["name"], corpus_sha256=c["sha256"], corpus_source=c["source"])
    return prov


def _common_args(tool: str, model: Path, build: dict, ctx: int, kv: str, threads: int, run: dict) -> list:
    k, v = kv_pair(kv)
    args = [tool, "-m", model, "-c", ctx, "-t", threads, "-fa", run.get("flash_attn", "on"),
            "-ctk", k, "-ctv", v]
    if build.get("backend") == "CUDA":
        args += ["-ngl", run.get("n_gpu_layers", 99)]
    return args


def perplexity_job(tool, build_json, manifest, corpus, corpus_json, ctx: int, kv: str, chunks, threads: int,
                   run: dict, out, log) -> dict:
    build = read_json(build_json)
    cmd = _common_args(tool, model_path(manifest), build, ctx, kv, threads, run) + ["-f", corpus]
    if chunks:
        cmd += ["--chunks", chunks]
    r = run_tool(cmd, log)
    result = parse_perplexity(r.output)
    k, v = kv_pair(kv)
    record = {"stage": "perplexity",
              "provenance": provenance(build_json, manifest, corpus_json, r.output),
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
                 max_logits_gib: float, threads: int, run: dict, logits_out, out, log) -> dict:
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
        r = run_tool(cmd, log)
        result = parse_perplexity(r.output)
        written = partial.stat().st_size if partial.exists() else None
        kld_mod.check_logits_file(partial, fc)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(logits_out)
    k, v = kv_pair(kv)
    record = {"stage": "kld_base", "provenance": provenance(build_json, manifest, corpus_json, r.output),
              "params": {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": chunks, "threads": threads,
                         **run},
              "result": {**result.to_dict(), "logits_bytes_forecast": fc.bytes, "logits_bytes_written": written,
                         "forecast": fc.to_dict()},
              "tool": {"cmd": [str(c) for c in cmd], "wall_seconds": r.wall_seconds}}
    write_json(out, record)
    return record


def kld_job(tool, build_json, manifest, base_record, logits, ctx: int, kv: str, threads: int, run: dict,
            out, log) -> dict:
    build = read_json(build_json)
    base = read_json(base_record)
    cmd = _common_args(tool, model_path(manifest), build, ctx, kv, threads, run) + [
        "--kl-divergence-base", logits, "--kl-divergence"]
    r = run_tool(cmd, log)
    result = parse_kld(r.output)
    k, v = kv_pair(kv)
    prov = provenance(build_json, manifest, None, r.output)
    bp = base["provenance"]
    prov.update(corpus=bp.get("corpus"), corpus_sha256=bp.get("corpus_sha256"), corpus_source=bp.get("corpus_source"),
                baseline_quant=bp["quant"], baseline_sha256=bp["file_sha256"], baseline_kv=base["params"]["kv"])
    record = {"stage": "kld", "provenance": prov,
              "params": {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": base["params"]["chunks"],
                         "threads": threads, **run},
              "result": result.flat(), "tool": {"cmd": [str(c) for c in cmd], "wall_seconds": r.wall_seconds}}
    write_json(out, record)
    return record


def bench_job(tool, build_json, manifest, plan: dict, strategy: str, spec: dict, threads: int, run: dict, out,
              log) -> dict:
    """One offload strategy of one quant: a llama-bench call per setting (N of --n-cpu-moe, KV type, -b, -ub),
    each with its own NVML VRAM peak; threads, prompt/gen sizes and depth swept inside each call."""
    build = read_json(build_json)
    gpu_build = build.get("backend") == "CUDA"
    thread_list = plan.get("threads") or [threads]
    rows, calls, outputs = [], [], []
    for inv in bench_mod.invocations(plan, strategy, spec):
        k, v = kv_pair(inv["kv"])
        cmd = [tool, "-m", model_path(manifest), "-o", "jsonl",
               "-p", ",".join(str(p) for p in plan.get("prompt", [512])),
               "-n", ",".join(str(n) for n in plan.get("gen", [128])),
               "-d", ",".join(str(d) for d in plan.get("depth") or [0]),
               "-r", plan.get("repetitions", 5), "-t", ",".join(str(t) for t in thread_list),
               "-fa", run.get("flash_attn", "on"), "-ctk", k, "-ctv", v]
        if inv["batch"] is not None:
            cmd += ["-b", inv["batch"]]
        if inv["ubatch"] is not None:
            cmd += ["-ub", inv["ubatch"]]
        cmd += bench_mod.setting_args(inv, gpu_build, run.get("n_gpu_layers", 99))
        cmd += [str(a) for a in plan.get("extra_args", [])]
        with VramSampler() as vram:
            r = run_tool(cmd, log, separate_stdout=True)
        mem = vram.result.to_dict()
        for row in bench_mod.parse_bench_jsonl(r.stdout):
            row = bench_mod.summarize(row, plan.get("discard_first", True), plan.get("noise_threshold_pct", 5.0))
            rows.append({**row, "strategy": strategy, "setting": {k2: inv[k2] for k2 in inv if k2 != "strategy"},
                         "vram": mem})
        calls.append({"cmd": [str(c) for c in cmd], "wall_seconds": r.wall_seconds, "vram": mem})
        outputs.append(r.output)
    prov = provenance(build_json, manifest, None, "\n".join(outputs))
    if not prov["gpu_name"]:
        prov["gpu_name"] = rows[0].get("gpu_info") or None
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


def tune_job(tool, build_json, manifest, budget_gib: float, plan: dict, threads: int, run: dict, out, log) -> dict:
    """The --n-cpu-moe that generates fastest within a VRAM budget, searched on measured VRAM (tuner.py)."""
    model = model_path(manifest)
    meta = gguf_metadata(model)
    info = gpu_info()
    record = {"stage": "tune", "provenance": provenance(build_json, manifest),
              "params": {"budget_gib": budget_gib, **plan, "threads": threads, **run}}
    why_not = (f"{info['reason']}: the tuner needs measured VRAM" if not info["available"] else
               f"{meta['architecture']} has no experts to offload" if not meta.get("expert_count") else None)
    if why_not:
        record["result"] = {"status": "not measured", "reason": why_not}
        write_json(out, record)
        return record
    gen = int(plan.get("gen", 64))
    # A prompt is processed too: its compute buffers (for a 152K vocabulary the logits of one ubatch alone are
    # ~300 MiB) are part of what a server needs, and a generation-only probe would miss them (measured: tg-only
    # probes read 296 MiB under the pp512+tg64 calls at the same N on the H200).
    prompt = int(plan.get("prompt", 512))

    def measure(n: int) -> Probe:
        cmd = [tool, "-m", model, "-o", "jsonl", "-p", prompt, "-n", gen, "-r", plan.get("repetitions", 3),
               "-t", threads, "-fa", run.get("flash_attn", "on"),
               *bench_mod.setting_args({"n_cpu_moe": n}, True, run.get("n_gpu_layers", 99))]
        with VramSampler() as vram:
            r = run_tool(cmd, log, separate_stdout=True)
        return tune_probe(n, r.stdout, vram.result.peak_delta_mib, log)

    res = tune_n_cpu_moe(measure, int(meta["block_count"]), budget_gib * 1024)
    record["result"] = {"status": "measured", **res.to_dict()}
    write_json(out, record)
    return record
