"""The jobs of kld.mode: sharded (rules/kld_sharded.smk); the pure parts live beside it (text, plan, stats, scratch).

  plan     tokenize the corpus once, size the shards from the exact logits forecast        kld_shard_plan
  shard    per shard: its text, the baseline pass into scratch, every quant's KLD pass,     kld_shard
           the logits deleted; the record keeps what llama-perplexity printed
  combine  per quant and KV type (and the baseline's PPL): the shards' statistics combined  kld_combine,
           into records shaped as mode chunks writes them, so tables and report read both    kld_base_combine
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ...core.config import kv_pair
from ...core.errors import ToolFailed
from ...core.io import read_json, record, tool_info, write_json
from ...core.job import Job
from ...core.units import GIB
from ...llamacpp import logits as kld_mod
from ...llamacpp.perplexity_output import parse_kld, parse_perplexity
from ...llamacpp.tokenize import perplexity_text, tokenize_ids
from ...sources.manifest import model_path
from ..provenance import provenance
from ..quality import pass_args, run_measurement
from .plan import check_batching, plan_shards, scored_tokens, shard_bytes
from .scratch import FolderSampler, scratch_slot
from .stats import combine_kld, combine_ppl
from .text import cuttable, read_vocab, token_spans, tokens_differing

MAX_DIFFERING = 0.001  # a shard whose tokens differ more than this from the full tokenization's fails


def run_key(quant: str, kv: str) -> str:
    return f"{quant}|{kv}"


def shard_plan_job(job: Job, *, manifest, corpus, corpus_record, ctx: int, chunks: int | None, sharded: dict) -> dict:
    """Tokenize the corpus once (job.tool: llama-tokenize) and size the shards from the exact logits forecast."""
    model = model_path(manifest)
    vocab = read_vocab(model)  # fails early for a tokenizer whose pieces cannot make shard texts
    ids = tokenize_ids(Path(job.tool), model, Path(corpus), job.log)
    # llama.cpp's own decision (GGUF key, or its default for the tokenizer's pre-type), read off the tokens
    vocab.add_bos = bool(ids) and vocab.bos_id is not None and ids[0] == vocab.bos_id
    text = perplexity_text(Path(corpus))
    ends = token_spans(ids, vocab, text)
    plan = plan_shards(len(ids), ctx, len(vocab.pieces), chunks, disk_budget_gib=sharded.get("disk_budget_gib", 4),
                       parallel=sharded.get("parallel", 1), can_start=cuttable(ends, ctx, vocab.add_bos))
    ranges = [shard_bytes(ends, len(text), ctx, a, b, add_bos=vocab.add_bos) for a, b in plan.shards]
    write_json(job.out["tokens"], {"model": str(model), "n_tokens": len(ids), "ids": ids})
    rec = record("kld_shard_plan", provenance(job.build_json, manifest, corpus_record),
                 {"ctx": ctx, "chunks": chunks, **sharded},
                 {**plan.to_dict(), "n_shards": len(plan.shards), "tokenizer": vocab.model, "add_bos": vocab.add_bos,
                  "text_bytes": len(text), "shard_byte_ranges": [list(r) for r in ranges]})
    job.note(f"{len(plan.shards)} shards of up to {plan.chunks_per_shard} chunks for {plan.n_chunk} chunks; largest "
             f"shard's logits {max(plan.shard_logits_bytes):,} bytes, budget {plan.disk_budget_bytes:,} bytes for "
             f"{plan.parallel} at once (unsharded: {plan.unsharded_logits_bytes:,} bytes)")
    write_json(job.out["plan"], rec)
    return rec


@dataclass(frozen=True)
class ShardFiles:
    """What a shard job reads: the baseline's and every quant's manifest, the corpus, the plan and its tokens."""

    base_manifest: Path
    manifests: dict[str, Path]   # quant -> manifest
    corpus: Path
    corpus_record: Path
    plan: Path
    tokens: Path


@dataclass
class _Shard:
    """One shard of the plan, as its job measures it."""

    index: int
    first: int
    end: int
    ctx: int
    forecast: int
    add_bos: bool
    n_vocab: int
    text: bytes

    @property
    def n_chunk(self) -> int:
        return self.end - self.first


def _shard_of(files: ShardFiles, index: int) -> tuple[_Shard, list[int], dict]:
    plan = read_json(files.plan)["result"]
    first, end = plan["shards"][index]
    corpus_text = perplexity_text(Path(files.corpus))
    if len(corpus_text) != plan["text_bytes"]:
        raise ToolFailed(f"{files.corpus} is not the text the shard plan was made from ({len(corpus_text)} bytes, "
                         f"the plan has {plan['text_bytes']}): rerun kld_shard_plan")
    byte_start, byte_end = plan["shard_byte_ranges"][index]
    shard = _Shard(index, first, end, plan["n_ctx"], plan["shard_logits_bytes"][index], plan["add_bos"],
                   plan["n_vocab"], corpus_text[byte_start:byte_end])
    return shard, read_json(files.tokens)["ids"], plan


def shard_job(job: Job, *, files: ShardFiles, shard: int, base_kv: str, runs: list[list[str]], scratch_root) -> dict:
    """One shard: baseline pass, then the KLD pass of every (quant, kv) in runs, logits only in scratch (the folder
    removed however the job ends)."""
    s, ids, plan = _shard_of(files, shard)
    w = job.wildcards
    scratch = Path(scratch_root) / "ggufbench-kld" / f"{w['build']}/{w['model']}/ctx{w['ctx']}" / f"shard-{shard}"
    with scratch_slot(Path(scratch_root), plan["parallel"]) as slot:
        shutil.rmtree(scratch, ignore_errors=True)  # what a killed attempt left
        scratch.mkdir(parents=True)
        try:
            _check_scratch_space(s, scratch)
            with FolderSampler(scratch) as disk:
                base, written, differing, compared = _base_pass(job, files, s, ids, base_kv=base_kv, scratch=scratch)
                klds = {run_key(q, kv): _kld_pass(job, files, s, quant=q, kv=kv, logits=scratch / "base.logits")
                        for q, kv in runs}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    job.note(f"shard {shard}: chunks [{s.first}, {s.end}), {differing} tokens differ from the full tokenization; "
             f"scratch peak {disk.peak_bytes:,} bytes ({disk.samples} samples), logits {written:,} bytes")
    k, v = kv_pair(base_kv)
    params = {"ctx": s.ctx, "base_kv": base_kv, "type_k": k, "type_v": v, "threads": job.threads, **job.run}
    rec = record("kld_shard", None, params,
                 {"n_chunk": s.n_chunk, "n_tokens_scored": scored_tokens(s.n_chunk, s.ctx),
                  "tokens_differing": differing, "tokens_compared": compared, "logits_bytes_forecast": s.forecast,
                  "logits_bytes_written": written, "scratch_peak_bytes": disk.peak_bytes,
                  "scratch_samples": disk.samples, "scratch_dir": str(scratch), "slot": slot, "base": base,
                  "kld": klds}, shard=shard, chunks=[s.first, s.end])
    write_json(job.out["record"], rec)
    return rec


def _check_scratch_space(s: _Shard, scratch: Path) -> None:
    free = shutil.disk_usage(scratch).free
    if s.forecast > free:
        raise ToolFailed(f"shard {s.index}: its logits are forecast at {s.forecast:,} bytes but {scratch} has "
                         f"{free:,} bytes free: free space there, set kld.sharded.scratch_dir, or lower "
                         "kld.sharded.disk_budget_gib")


def _base_pass(job: Job, files: ShardFiles, s: _Shard, ids: list[int], *, base_kv: str, scratch: Path):
    """The baseline pass over the shard's text into scratch; its logits checked against the forecast and its tokens
    against the corpus's own tokenization. Returns (its record, bytes written, tokens differing, compared)."""
    text = scratch / "shard.txt"
    text.write_bytes(s.text)
    logits = scratch / "base.logits"
    cmd = pass_args(job, model_path(files.base_manifest), s.ctx, base_kv) + [
        "-f", text, "--chunks", s.n_chunk, "--kl-divergence-base", logits]
    r, emulation = run_measurement(job, cmd)
    base = {"result": parse_perplexity(r.output).to_dict(), "cmd": [str(c) for c in cmd],
            "wall_seconds": r.wall_seconds,
            "provenance": provenance(job.build_json, files.base_manifest, files.corpus_record, r.output, emulation)}
    check_batching(base["result"]["n_seq"], s.ctx, f"shard {s.index}, baseline pass")
    kld_mod.check_logits_size(logits, s.forecast, s.n_chunk, s.ctx, s.n_vocab)
    written = logits.stat().st_size
    _, _, got_chunks, got = kld_mod.read_logits_tokens(logits)
    differing = tokens_differing(ids[s.first * s.ctx:s.end * s.ctx], got, s.ctx, s.add_bos)
    if differing > MAX_DIFFERING * len(got):
        raise ToolFailed(f"shard {s.index}: {differing} of {len(got)} tokens of its text differ from the corpus's "
                         "own tokenization, so it would not measure the same chunks; use kld.mode: chunks for this "
                         "model (and report the tokenizer: docs/kld-sharded.md)")
    return base, written, differing, got_chunks * s.ctx


def _kld_pass(job: Job, files: ShardFiles, s: _Shard, *, quant: str, kv: str, logits: Path) -> dict:
    manifest = files.manifests[quant]
    cmd = pass_args(job, model_path(manifest), s.ctx, kv) + ["--kl-divergence-base", logits, "--kl-divergence"]
    r, emulation = run_measurement(job, cmd)
    result = parse_kld(r.output)
    check_batching(result.n_seq, s.ctx, f"shard {s.index}, KLD pass of {quant} KV {kv}")
    return {"result": result.to_dict(), "cmd": [str(c) for c in cmd], "wall_seconds": r.wall_seconds,
            "provenance": provenance(job.build_json, manifest, files.corpus_record, r.output, emulation)}


def _shards(records: list[str], plan: dict) -> list[dict]:
    """The shard records in order, refused unless they tile exactly the plan's chunks [0, n_chunk)."""
    recs = sorted((read_json(p) for p in records), key=lambda r: r["shard"])
    got = [r["chunks"] for r in recs]
    if not recs or got[0][0] != 0 or got[-1][1] != plan["n_chunk"] or len(recs) != len(plan["shards"]):
        raise ToolFailed(f"the shard records cover chunks {got}, the plan {plan['shards']} (chunks 0 to "
                         f"{plan['n_chunk']}): a shard record is missing or from another plan; rerun kld_shard_plan")
    for a, b in zip(recs, recs[1:], strict=False):
        if a["chunks"][1] != b["chunks"][0]:
            raise ToolFailed(f"shard records do not tile the chunks: shard {a['shard']} ends at {a['chunks'][1]}, "
                             f"shard {b['shard']} starts at {b['chunks'][0]}; rerun kld_shard_plan")
    return recs


def _same(values: list, what: str) -> None:
    if len(set(values)) > 1:
        raise ToolFailed(f"the shards were measured with different {what} ({sorted(set(map(str, values)))}): a "
                         "file or build changed between shard jobs; rerun them (snakemake -R kld_shard)")


def _params(recs: list[dict], plan: dict, kv: str, chunks) -> dict:
    """A combined record's params, as mode chunks writes them, plus how it was sharded."""
    p = recs[0]["params"]
    k, v = kv_pair(kv)
    return {"ctx": plan["n_ctx"], "kv": kv, "type_k": k, "type_v": v, "chunks": chunks, "threads": p["threads"],
            "kld_mode": "sharded", "n_shards": len(recs),
            "disk_budget_gib": round(plan["disk_budget_bytes"] / GIB, 6), "parallel": plan["parallel"],
            **{key: p[key] for key in ("n_gpu_layers", "flash_attn") if key in p}}


def _chunks_in_corpus(results: list[dict], recs: list[dict]) -> list[dict]:
    """Every shard's per-chunk values (each shard's table restarts at its first chunk), numbered in the corpus."""
    return [{**c, "chunk": r["chunks"][0] + c["chunk"]} for res, r in zip(results, recs, strict=True)
            for c in res.get("chunks", [])]


def _run_shape(result: dict) -> dict:
    """How llama-perplexity ran (the same in every shard): n_ctx, n_batch, n_seq, seconds per pass."""
    return {key: result.get(key) for key in ("n_ctx", "n_batch", "n_seq", "seconds_per_pass")}


def combine_job(job: Job, *, shards: list[str], plan, quant: str, kv: str, chunks) -> dict:
    """One quant's KLD over every shard (their records), as one record shaped as rule kld's (mode chunks)."""
    plan = read_json(plan)["result"]
    recs = _shards(shards, plan)
    runs = [r["result"]["kld"][run_key(quant, kv)] for r in recs]
    _same([x["provenance"]["file_sha256"] for x in runs], "files of this quant")
    _same([x["provenance"]["build_key"] for x in runs], "builds")
    _same([r["result"]["base"]["provenance"]["file_sha256"] for r in recs], "baseline files")
    parts = [(x["result"], r["result"]["n_tokens_scored"]) for x, r in zip(runs, recs, strict=True)]
    result = combine_kld(parts)
    result.update(n_chunks=sum(r["result"]["n_chunk"] for r in recs), **_run_shape(runs[0]["result"]),
                  tokens_differing=sum(r["result"]["tokens_differing"] for r in recs),
                  shard_kld_mean=[x["result"]["kld_mean"] for x in runs],
                  chunks=_chunks_in_corpus([x["result"] for x in runs], recs))
    base = recs[0]["result"]["base"]
    prov = dict(runs[0]["provenance"])
    prov.update(baseline_quant=base["provenance"]["quant"], baseline_sha256=base["provenance"]["file_sha256"],
                baseline_kv=recs[0]["params"]["base_kv"])
    rec = record("kld", prov, _params(recs, plan, kv, chunks), result,
                 tool_info(runs[0]["cmd"], sum(x["wall_seconds"] for x in runs)))
    write_json(job.out["record"], rec)
    return rec


def base_combine_job(job: Job, *, shards: list[str], plan, chunks) -> dict:
    """The baseline's PPL over every shard (its baseline passes), and the disk each shard used."""
    plan = read_json(plan)["result"]
    recs = _shards(shards, plan)
    bases = [r["result"]["base"] for r in recs]
    _same([b["provenance"]["file_sha256"] for b in bases], "baseline files")
    ppl, unc = combine_ppl([(b["result"]["ppl"], b["result"]["ppl_uncertainty"], r["result"]["n_tokens_scored"])
                               for b, r in zip(bases, recs, strict=True)])
    result = {"ppl": ppl, "ppl_uncertainty": unc, "n_chunks": sum(r["result"]["n_chunk"] for r in recs),
              **_run_shape(bases[0]["result"]), "chunk_ppl": [], "shard_ppl": [b["result"]["ppl"] for b in bases],
              "chunks": _chunks_in_corpus([b["result"] for b in bases], recs),
              "logits_bytes_forecast": max(r["result"]["logits_bytes_forecast"] for r in recs),
              "logits_bytes_written": max(r["result"]["logits_bytes_written"] for r in recs),
              "unsharded_logits_bytes": plan["unsharded_logits_bytes"],
              "disk_budget_bytes": plan["disk_budget_bytes"],
              "scratch_peak_bytes": max(r["result"]["scratch_peak_bytes"] for r in recs),
              "tokens_differing": sum(r["result"]["tokens_differing"] for r in recs),
              "tokens_compared": sum(r["result"]["tokens_compared"] for r in recs)}
    rec = record("kld_base", bases[0]["provenance"], _params(recs, plan, recs[0]["params"]["base_kv"], chunks), result,
                 tool_info(bases[0]["cmd"], sum(b["wall_seconds"] for b in bases)))
    write_json(job.out["record"], rec)
    return rec
