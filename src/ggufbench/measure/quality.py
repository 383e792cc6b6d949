"""The quality jobs: one llama-perplexity pass each (a PPL cell, the baseline logits, one quant's KLD), on the
emulated smaller GPU when asked; each writes one record."""

from __future__ import annotations

from pathlib import Path

from ..core.config import kv_pair
from ..core.errors import ToolFailed
from ..core.io import mismatch, read_json, record, remove_with_stamp, sha256_file, stamp_verified, tool_info, write_json
from ..core.job import Job
from ..core.units import GIB
from ..llamacpp import logits as kld_mod
from ..llamacpp.cli import perplexity_args
from ..llamacpp.emulate import emulated_gpu
from ..llamacpp.gguf import gguf_metadata, kv_shape
from ..llamacpp.perplexity_output import parse_kld, parse_perplexity
from ..llamacpp.run import ToolRun, run_tool
from ..llamacpp.tokenize import count_tokens
from ..sources.manifest import model_path
from .provenance import provenance


def run_measurement(job: Job, cmd: list) -> tuple[ToolRun, dict]:
    """Run a llama-perplexity pass, on the emulated smaller GPU when gpu.emulate_free_gib asks; returns the run and
    the emulation record its result carries."""
    with emulated_gpu(job.gpu.get("emulate_free_gib"), job.gpu_build) as emulation:
        return run_tool(cmd, job.log), emulation


def pass_args(job: Job, model: Path, ctx: int, kv: str) -> list:
    """llama-perplexity's common flags for this job's build, threads and run settings."""
    return perplexity_args(job.tool, model, build=job.build, ctx=ctx, kv=kv, threads=job.threads, run=job.run)


def pass_params(job: Job, ctx: int, kv: str, chunks) -> dict:
    """A pass's params as its record keeps them: ctx, the KV types, chunks, threads and the run settings."""
    k, v = kv_pair(kv)
    return {"ctx": ctx, "kv": kv, "type_k": k, "type_v": v, "chunks": chunks, "threads": job.threads, **job.run}


# llama-perplexity scores the second half of each chunk (logits.scored_per_chunk). It prints no KLD statistics
# below 100 scored tokens (perplexity.cpp: "if (kld.count < 100) return"); a PPL gets the same floor here.
MIN_SCORED_TOKENS = 100


def check_corpus(n_tokens: int, ctx: int, chunks: int | None, key: str) -> None:
    """Before the pass: two contexts of tokens (llama-perplexity's own minimum) and at least MIN_SCORED_TOKENS
    scored, so no number comes from a handful of tokens. key: the config section (perplexity, kld)."""
    if n_tokens < 2 * ctx:
        raise ToolFailed(f"too few tokens: the corpus has {n_tokens:,} tokens, {2 * ctx} tokens needed for ctx {ctx} "
                         f"(two contexts); use a longer corpus or a smaller {key}.ctx")
    per_chunk = kld_mod.scored_per_chunk(ctx)
    scored = kld_mod.n_chunks_used(n_tokens, ctx, chunks) * per_chunk
    if scored < MIN_SCORED_TOKENS:
        raise ToolFailed(f"{key}: ctx {ctx} with --chunks {chunks} scores {scored} tokens, fewer than "
                         f"{MIN_SCORED_TOKENS} (each chunk scores its second half, {per_chunk} tokens): "
                         f"raise {key}.chunks or {key}.ctx")


def check_context(model: Path, n_vocab: int, ctx: int, key: str, available: int | None = None) -> None:
    """Before the pass: ctx within the model's training context, and the host memory llama-perplexity takes for a
    context's logits (n_ctx x n_vocab floats, kept for the whole chunk) within what the machine has free."""
    n_ctx_train = kv_shape(model).get("n_ctx_train")
    if n_ctx_train and ctx > n_ctx_train:
        raise ToolFailed(f"{key}.ctx {ctx:,} is beyond the model's training context ({n_ctx_train:,}, "
                         f"{model.name}): PPL or KLD there measures extrapolation, not the quant; use at most "
                         f"{n_ctx_train}")
    need = ctx * n_vocab * 4
    available = available if available is not None else _mem_available()
    if available is not None and need > available:
        raise ToolFailed(f"{key}.ctx {ctx:,}: llama-perplexity keeps {ctx:,} x {n_vocab:,} logits "
                         f"({need / GIB:.1f} GiB) in host memory, and {available / GIB:.1f} GiB is available; "
                         f"use a smaller {key}.ctx")


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def precheck(job: Job, model: Path, corpus, ctx: int, chunks, *, key: str) -> tuple[int, int]:
    """The checks before any pass: context bounds, then the corpus's tokens (llama-tokenize, vocabulary-only load).
    Returns (token count, n_vocab)."""
    n_vocab = gguf_metadata(model)["n_vocab"]
    check_context(model, n_vocab, ctx, key)
    n_tokens = count_tokens(Path(job.tool).with_name("llama-tokenize"), model, Path(corpus), job.log)
    check_corpus(n_tokens, ctx, int(chunks) if chunks else None, key)
    return n_tokens, n_vocab


def perplexity_job(job: Job, *, manifest, corpus, corpus_record, ctx: int, kv: str, chunks) -> dict:
    model = model_path(manifest)
    precheck(job, model, corpus, ctx, chunks, key="perplexity")
    cmd = pass_args(job, model, ctx, kv) + ["-f", corpus]
    if chunks:
        cmd += ["--chunks", chunks]
    r, emulation = run_measurement(job, cmd)
    result = parse_perplexity(r.output)
    rec = record("perplexity", provenance(job.build_json, manifest, corpus_record, r.output, emulation),
                 pass_params(job, ctx, kv, chunks), result.to_dict(), tool_info(cmd, r.wall_seconds))
    write_json(job.out["record"], rec)
    return rec


def kld_base_job(job: Job, *, manifest, corpus, corpus_record, ctx: int, kv: str, chunks: int) -> dict:
    """Baseline pass: writes logits under a temporary name, renamed only when complete and exactly sized; refused
    before the pass when the forecast exceeds kld.max_logits_gib (a guard: read, not measured) or the free disk."""
    model = model_path(manifest)
    logits_out = job.out["logits"]
    logits_out.parent.mkdir(parents=True, exist_ok=True)
    n_tokens, n_vocab = precheck(job, model, corpus, ctx, chunks, key="kld")
    fc = kld_mod.forecast(ctx, n_vocab, n_tokens, chunks, budget_gib=job.setting("kld.max_logits_gib"),
                          target_dir=logits_out.parent)
    job.note(f"logits forecast: {fc.to_dict()}")
    kld_mod.check_forecast(fc)
    partial = logits_out.with_name(f".{logits_out.name}.partial")
    partial.unlink(missing_ok=True)
    cmd = pass_args(job, model, ctx, kv) + ["-f", corpus, "--chunks", chunks, "--kl-divergence-base", partial]
    try:
        r, emulation = run_measurement(job, cmd)
        result = parse_perplexity(r.output)
        written = partial.stat().st_size if partial.exists() else None
        kld_mod.check_logits_file(partial, fc)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(logits_out)
    logits_sha = sha256_file(logits_out)
    stamp_verified(logits_out, logits_sha)  # each KLD job checks the file against this record before using it
    rec = record("kld_base", provenance(job.build_json, manifest, corpus_record, r.output, emulation),
                 pass_params(job, ctx, kv, chunks),
                 {**result.to_dict(), "logits_bytes_forecast": fc.bytes, "logits_bytes_written": written,
                  "logits_sha256": logits_sha, "forecast": fc.to_dict()}, tool_info(cmd, r.wall_seconds))
    write_json(job.out["record"], rec)
    return rec


def check_baseline_logits(logits: Path, base_record: Path, base: dict, n_vocab: int) -> None:
    """The logits file is the one its baseline record describes: header (n_ctx, n_vocab, n_chunk) as the pass ran,
    size as written, sha256 as hashed then (again only when size or mtime moved). A file that is not is removed
    with the record, so a plain rerun redoes the baseline pass and every KLD against it."""
    why = _logits_mismatch(logits, base, n_vocab)
    if why is not None:
        remove_with_stamp(logits)
        base_record.unlink(missing_ok=True)
        raise ToolFailed(f"{logits} {why}: it is not the baseline pass's file, so no KLD against it can be trusted. "
                         f"Removed it and {base_record}: a plain rerun redoes the baseline pass.")


def _logits_mismatch(logits: Path, base: dict, n_vocab: int) -> str | None:
    res, params = base["result"], base["params"]
    try:
        n_ctx, nv, n_chunk, _ = kld_mod.read_logits_tokens(logits)
    except FileNotFoundError:
        return "is missing"
    except ToolFailed as e:
        return str(e).removeprefix(f"{logits} ")
    want = (params["ctx"], n_vocab, res.get("n_chunks"))
    if want[2] is None:  # a record from before n_chunks was kept: the header's ctx and vocabulary
        got, want = (n_ctx, nv), want[:2]
    else:
        got = (n_ctx, nv, n_chunk)
    if got != want:
        return (f"holds {n_chunk} chunks of ctx {n_ctx} for n_vocab {nv}; its baseline record is "
                f"{res.get('n_chunks')} chunks of ctx {params['ctx']} for n_vocab {n_vocab}")
    if res.get("logits_bytes_written") is not None and res.get("logits_sha256"):
        return mismatch(logits, res["logits_bytes_written"], res["logits_sha256"])
    return None


def kld_job(job: Job, *, manifest, base_record, logits, ctx: int, kv: str) -> dict:
    base = read_json(base_record)
    model = model_path(manifest)
    check_baseline_logits(Path(logits), Path(base_record), base, gguf_metadata(model)["n_vocab"])
    cmd = pass_args(job, model, ctx, kv) + ["--kl-divergence-base", logits, "--kl-divergence"]
    r, emulation = run_measurement(job, cmd)
    result = parse_kld(r.output)
    prov = provenance(job.build_json, manifest, None, r.output, emulation)
    bp = base["provenance"]
    prov.update(corpus=bp.get("corpus"), corpus_sha256=bp.get("corpus_sha256"), corpus_source=bp.get("corpus_source"),
                baseline_quant=bp["quant"], baseline_sha256=bp["file_sha256"], baseline_kv=base["params"]["kv"])
    rec = record("kld", prov, pass_params(job, ctx, kv, base["params"]["chunks"]),
                 {**result.flat(), "chunks": result.chunks}, tool_info(cmd, r.wall_seconds))
    write_json(job.out["record"], rec)
    return rec
