"""The quality jobs: one llama-perplexity pass each (a PPL cell, the baseline logits, one quant's KLD), on the
emulated smaller GPU when asked; each writes one record."""

from __future__ import annotations

from pathlib import Path

from ..core.config import kv_pair
from ..core.io import read_json, record, tool_info, write_json
from ..llamacpp import logits as kld_mod
from ..llamacpp.cli import perplexity_args
from ..llamacpp.emulate import emulated_gpu
from ..llamacpp.gguf import gguf_metadata
from ..llamacpp.perplexity_output import parse_kld, parse_perplexity
from ..llamacpp.run import ToolRun, run_tool
from ..llamacpp.tokenize import count_tokens
from ..sources.manifest import model_path
from .provenance import provenance


def run_measurement(cmd: list, log, build: dict, gpu: dict) -> tuple[ToolRun, dict]:
    """Run a llama-perplexity pass, on the emulated smaller GPU when gpu.emulate_free_gib asks; returns the run and
    the emulation record its result carries."""
    with emulated_gpu(gpu.get("emulate_free_gib"), build.get("backend") == "CUDA") as emulation:
        return run_tool(cmd, log), emulation


def perplexity_job(tool, build_json, manifest, corpus, corpus_json, ctx: int, kv: str, chunks, threads: int,
                   run: dict, gpu: dict, out, log) -> dict:
    build = read_json(build_json)
    cmd = perplexity_args(tool, model_path(manifest), build, ctx, kv, threads, run) + ["-f", corpus]
    if chunks:
        cmd += ["--chunks", chunks]
    r, emulation = run_measurement(cmd, log, build, gpu)
    result = parse_perplexity(r.output)
    k, v = kv_pair(kv)
    rec = record("perplexity", provenance(build_json, manifest, corpus_json, r.output, emulation),
                 {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": chunks, "threads": threads, **run},
                 result.to_dict(), tool_info(cmd, r.wall_seconds))
    write_json(out, rec)
    return rec


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
    cmd = perplexity_args(tool, model, build, ctx, kv, threads, run) + [
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
    rec = record("kld_base", provenance(build_json, manifest, corpus_json, r.output, emulation),
                 {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": chunks, "threads": threads, **run},
                 {**result.to_dict(), "logits_bytes_forecast": fc.bytes, "logits_bytes_written": written,
                  "forecast": fc.to_dict()}, tool_info(cmd, r.wall_seconds))
    write_json(out, rec)
    return rec


def kld_job(tool, build_json, manifest, base_record, logits, ctx: int, kv: str, threads: int, run: dict, gpu: dict,
            out, log) -> dict:
    build = read_json(build_json)
    base = read_json(base_record)
    cmd = perplexity_args(tool, model_path(manifest), build, ctx, kv, threads, run) + [
        "--kl-divergence-base", logits, "--kl-divergence"]
    r, emulation = run_measurement(cmd, log, build, gpu)
    result = parse_kld(r.output)
    k, v = kv_pair(kv)
    prov = provenance(build_json, manifest, None, r.output, emulation)
    bp = base["provenance"]
    prov.update(corpus=bp.get("corpus"), corpus_sha256=bp.get("corpus_sha256"), corpus_source=bp.get("corpus_source"),
                baseline_quant=bp["quant"], baseline_sha256=bp["file_sha256"], baseline_kv=base["params"]["kv"])
    rec = record("kld", prov, {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": base["params"]["chunks"],
                               "threads": threads, **run}, result.flat(), tool_info(cmd, r.wall_seconds))
    write_json(out, rec)
    return rec
