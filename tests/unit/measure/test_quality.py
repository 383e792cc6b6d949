"""measure.quality: the perplexity, baseline and KLD jobs, each run with a stand-in llama-perplexity that prints real
captured output (tests/data/cpu-0.3.36): what a job writes on success, and that a failure is named and leaves no
record (nor a logits file)."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.core.io import read_json, write_json
from ggufbench.llamacpp.logits import logits_file_size
from ggufbench.measure.quality import kld_base_job, kld_job, perplexity_job
from ggufbench.sources.manifest import write_manifest
from tests.support import DATA
from tests.support.jobs import make_job
from tests.support.models import sha

CPU = DATA / "cpu-0.3.36"
RUN = {"n_gpu_layers": 99, "flash_attn": "on"}


def stand_in(path, capture: str | None, exit_code: int = 0, extra: str = ""):
    """An executable that runs `extra` (Python), prints a real capture and exits with exit_code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    show = f"sys.stdout.write(open({str(CPU / capture)!r}, encoding='utf-8').read())" if capture else ""
    path.write_text(f"#!{sys.executable}\nimport sys\n{extra}\n{show}\nsys.exit({exit_code})\n")
    path.chmod(0o755)
    return path


def inputs(tmp_path, quant="Q8_0"):
    build = tmp_path / "build.json"
    write_json(build, {"build": "cpu", "key": "k1", "version": "0.5.0-dev", "commit": "0c1e570", "backend": "CPU"})
    manifest = tmp_path / quant / "manifest.json"
    gguf = tmp_path / quant / f"smol-{quant}.gguf"
    gguf.parent.mkdir(parents=True, exist_ok=True)
    tiny_gguf(gguf, 10)  # a real GGUF: every job verifies its model file against the manifest before running
    write_manifest(manifest, "smol", quant, [gguf], {"kind": "quantize"})
    corpus_json = tmp_path / "corpus.json"
    write_json(corpus_json, {"name": "pydocs", "sha256": "c0ffee", "source": {"python_docs": {}}})
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    tokens(tmp_path, 4096)
    return build, manifest, corpus, corpus_json


def tokens(tmp_path, n: int):
    """A stand-in llama-tokenize that prints n token ids: the corpus length every pass is checked against first."""
    return stand_in(tmp_path / "bin/llama-tokenize", None, extra=f"print(list(range({n})))")


def test_perplexity_job_writes_the_parsed_cell_with_its_command_and_corpus(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", "ppl_q8_0_kv-q8_0.txt")
    build, manifest, corpus, corpus_json = inputs(tmp_path)
    out, log = tmp_path / "ppl.json", tmp_path / "ppl.log"
    rec = perplexity_job(make_job(tool=tool, build_json=build, run=RUN, out=out, log=log), manifest=manifest,
                   corpus=corpus, corpus_record=corpus_json, ctx=512, kv="q8_0-f16", chunks=8)
    assert read_json(out) == json.loads(json.dumps(rec, default=str))
    assert rec["stage"] == "perplexity" and rec["result"]["ppl"] == 12.0056
    assert (rec["params"]["type_k"], rec["params"]["type_v"], rec["params"]["chunks"]) == ("q8_0", "f16", 8)
    cmd = rec["tool"]["cmd"]
    assert cmd[cmd.index("-ctk") + 1] == "q8_0" and cmd[cmd.index("-ctv") + 1] == "f16"
    assert cmd[-4:] == ["-f", str(corpus), "--chunks", "8"] and cmd[cmd.index("-m") + 1].endswith("smol-Q8_0.gguf")
    assert "-ngl" not in cmd  # a CPU build
    p = rec["provenance"]
    assert (p["quant"], p["file_sha256"], p["corpus"], p["build_key"]) == ("Q8_0", sha(manifest), "pydocs", "k1")
    assert "Final estimate: PPL = 12.0056" in log.read_text()


@pytest.mark.faults
def test_perplexity_job_exiting_0_without_a_result_fails_by_name_and_writes_nothing(tmp_path):
    """llama-perplexity exits 0 on a corpus that is too short: the job must not write a cell."""
    tool = stand_in(tmp_path / "bin/llama-perplexity", "fail_too_few_tokens.txt")
    build, manifest, corpus, corpus_json = inputs(tmp_path)
    out = tmp_path / "ppl.json"
    with pytest.raises(ToolFailed, match=r"too few tokens.*1024 tokens needed for ctx 512"):
        perplexity_job(make_job(tool=tool, build_json=build, run=RUN, out=out, log=tmp_path / "ppl.log"),
                   manifest=manifest, corpus=corpus, corpus_record=corpus_json, ctx=512, kv="f16", chunks=None)
    assert not out.exists() and list(tmp_path.glob(".ppl.json*")) == []


def logits_bytes(n_ctx: int, n_vocab: int, n_chunk: int, seed: int = 1) -> bytes:
    """A logits file in llama.cpp's format (header, tokens, then per-chunk rows), its rows filled per chunk."""
    head = b"_logits_" + struct.pack("<Iii", n_ctx, n_vocab, n_chunk) + struct.pack(f"<{n_ctx * n_chunk}i",
                                                                                   *range(n_ctx * n_chunk))
    per_chunk = (logits_file_size(n_ctx, n_vocab, n_chunk) - len(head)) // n_chunk
    return head + b"".join(bytes([(seed + c) % 256]) * per_chunk for c in range(n_chunk))


def base_record(tmp_path, build, corpus, corpus_json):
    """The F16 baseline's record (its PPL pass, 12 chunks of ctx 512) and its logits file, as kld_base_job
    leaves them: size and sha256 of the logits in the record."""
    import hashlib

    tool = stand_in(tmp_path / "base/llama-perplexity", "ppl_q8_0_kv-f16.txt")
    stand_in(tmp_path / "base/llama-tokenize", None, extra="print(list(range(8192)))")
    _, f16, _, _ = inputs(tmp_path, "F16")
    out = tmp_path / "base.json"
    perplexity_job(make_job(tool=tool, build_json=build, run=RUN, out=out, log=tmp_path / "base.log"), manifest=f16,
                   corpus=corpus, corpus_record=corpus_json, ctx=512, kv="f16", chunks=12)
    data = logits_bytes(512, 10, 12)
    (tmp_path / "base.logits").write_bytes(data)
    rec = read_json(out)
    rec["result"].update(logits_bytes_written=len(data), logits_sha256=hashlib.sha256(data).hexdigest())
    write_json(out, rec)
    return out


def test_kld_job_takes_corpus_baseline_and_chunks_from_the_baseline_record(tmp_path):
    build, manifest, corpus, corpus_json = inputs(tmp_path, "Q2_K")
    base = base_record(tmp_path, build, corpus, corpus_json)
    tool = stand_in(tmp_path / "bin/llama-perplexity", "kld_q2_k.txt")
    out = tmp_path / "kld.json"
    rec = kld_job(make_job(tool=tool, build_json=build, run=RUN, out=out, log=tmp_path / "kld.log"), manifest=manifest,
                base_record=base, logits=tmp_path / "base.logits", ctx=512, kv="q8_0")
    assert read_json(out)["result"] == rec["result"]
    assert rec["stage"] == "kld" and rec["params"]["chunks"] == 12
    p = rec["provenance"]
    f16 = sha(tmp_path / "F16/manifest.json")
    assert (p["quant"], p["baseline_quant"], p["baseline_sha256"], p["baseline_kv"]) == ("Q2_K", "F16", f16, "f16")
    assert (p["corpus"], p["corpus_sha256"]) == ("pydocs", "c0ffee")
    r = rec["result"]
    assert (r["kld_mean"], r["same_top_p_pct"]) == (0.416352, 68.725) and "kld_p99_9" in r  # one flat row
    # and each chunk's own values, for the paired comparisons (report/paired.py reads them from chunks.parquet)
    assert [c["chunk"] for c in r["chunks"]] == list(range(r["n_chunks"])) and r["chunks"][0]["kld"] > 0
    assert rec["tool"]["cmd"][-3:] == ["--kl-divergence-base", str(tmp_path / "base.logits"), "--kl-divergence"]


@pytest.mark.parametrize(("capture", "why"), [
    ("fail_truncated_logits.txt", "truncated; rerun the baseline pass"),
    ("fail_bad_logits.txt", "not a llama.cpp logits file"),
    ("fail_kld_too_few_scored.txt", "below 100 scored tokens"),
])
@pytest.mark.faults
def test_kld_job_on_a_real_failure_raises_its_reason_and_writes_no_record(tmp_path, capture, why):
    build, manifest, corpus, corpus_json = inputs(tmp_path, "Q2_K")
    base = base_record(tmp_path, build, corpus, corpus_json)
    tool = stand_in(tmp_path / "bin/llama-perplexity", capture)
    out = tmp_path / "kld.json"
    with pytest.raises(ToolFailed, match=why):
        kld_job(make_job(tool=tool, build_json=build, run=RUN, out=out, log=tmp_path / "kld.log"), manifest=manifest,
                base_record=base, logits=tmp_path / "base.logits", ctx=512, kv="f16")
    assert not out.exists()


def swap_chunks(data: bytes, n_ctx: int, n_vocab: int, n_chunk: int) -> bytes:
    """Chunk 1's rows copied over chunk 0's: header, tokens and size unchanged."""
    head = 20 + 4 * n_ctx * n_chunk
    per = (len(data) - head) // n_chunk
    return data[:head] + data[head + per: head + 2 * per] + data[head + per:]


@pytest.mark.faults
@pytest.mark.parametrize(("damage", "why"), [
    # the cases: a ctx-256 file put in place of the ctx-512 one (accepted, labelled ctx 512); one chunk
    # copied over another (KLD 1.453 against a true 0.429); a truncated file (the rerun did not redo the pass)
    (lambda d: logits_bytes(256, 10, 24), r"holds 24 chunks of ctx 256 for n_vocab 10; its baseline record is 12 "
                                          r"chunks of ctx 512 for n_vocab 10"),
    (lambda d: swap_chunks(d, 512, 10, 12), r"has sha256 \w{12}, its record says \w{12}"),
    (lambda d: d[: len(d) // 2], r"is 55,138 bytes, its record says 110,276"),
    (lambda d: d[:100], r"header promises 12 chunks of 512 tokens but the file ends early"),
    (lambda d: b"Entry not found", r"is not a llama.cpp logits file"),
])
def test_baseline_logits_that_are_not_their_records_file_are_refused_and_removed(tmp_path, damage, why):
    """Checked before llama-perplexity runs; logits and baseline record are removed, so the rerun redoes the
    baseline pass (Snakemake sees its record missing) instead of failing again or measuring against them."""
    build, manifest, corpus, corpus_json = inputs(tmp_path, "Q2_K")
    base = base_record(tmp_path, build, corpus, corpus_json)
    logits = tmp_path / "base.logits"
    logits.write_bytes(damage(logits.read_bytes()))
    started = tmp_path / "started"
    tool = stand_in(tmp_path / "bin/llama-perplexity", "kld_q2_k.txt", extra=f"open({str(started)!r}, 'w')")
    out = tmp_path / "kld.json"
    with pytest.raises(ToolFailed, match=why + r".*Removed it and .*base.json: a plain rerun redoes the baseline"):
        kld_job(make_job(tool=tool, build_json=build, run=RUN, out=out, log=tmp_path / "kld.log"), manifest=manifest,
                base_record=base, logits=logits, ctx=512, kv="f16")
    assert not started.exists() and not out.exists() and not logits.exists() and not base.exists()


@pytest.mark.faults
def test_missing_baseline_logits_are_named_and_the_record_removed(tmp_path):
    build, manifest, corpus, corpus_json = inputs(tmp_path, "Q2_K")
    base = base_record(tmp_path, build, corpus, corpus_json)
    (tmp_path / "base.logits").unlink()
    tool = stand_in(tmp_path / "bin/llama-perplexity", "kld_q2_k.txt")
    with pytest.raises(ToolFailed, match=r"base.logits is missing"):
        kld_job(make_job(tool=tool, build_json=build, run=RUN, out=tmp_path / "k.json", log=tmp_path / "kld.log"),
                manifest=manifest, base_record=base, logits=tmp_path / "base.logits", ctx=512, kv="f16")
    assert not base.exists()


def tiny_gguf(path, n_vocab: int) -> None:
    """A GGUF v3 with no tensors: general.architecture and a vocabulary of n_vocab tokens (what the job reads)."""
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b
    kv = s(b"general.architecture") + struct.pack("<I", 8) + s(b"llama")
    kv += s(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, n_vocab) + b"".join(
        s(f"t{i}".encode()) for i in range(n_vocab))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv)


@pytest.mark.faults
@pytest.mark.parametrize("complete", [True, False])
def test_kld_base_job_keeps_the_logits_only_when_exactly_the_forecast_size(tmp_path, complete):
    """A baseline pass whose tool says it finished but wrote a short logits file fails, and leaves neither the
    logits (under its name or the partial one) nor a record; a complete one is renamed into place."""
    build, manifest, corpus, corpus_json = inputs(tmp_path, "F16")
    size = logits_file_size(128, 10, 2)  # 300 tokens: 2 chunks of 128
    stand_in(tmp_path / "bin/llama-tokenize", None, extra="print('[' + ', '.join(map(str, range(300))) + ']')")
    write = (f"p = sys.argv[sys.argv.index('--kl-divergence-base') + 1]\n"
             f"open(p, 'wb').write(b'_logits_' + bytes({size if complete else size // 2} - 8))")
    tool = stand_in(tmp_path / "bin/llama-perplexity", "kld_base_small.txt", extra=write)
    logits, out = tmp_path / "logits/base.logits", tmp_path / "base.json"
    job = make_job(tool=tool, build_json=build, run=RUN, out={"logits": logits, "record": out},
                   log=tmp_path / "base.log", settings={"kld.max_logits_gib": 1.0})
    args = {"manifest": manifest, "corpus": corpus, "corpus_record": corpus_json, "ctx": 128, "kv": "f16", "chunks": 2}
    if not complete:
        with pytest.raises(ToolFailed, match=f"{size // 2:,} bytes written, {size:,} expected for 2 chunks"):
            kld_base_job(job, **args)
        assert not out.exists() and list(logits.parent.iterdir()) == []
        return
    rec = kld_base_job(job, **args)
    assert logits.stat().st_size == size and [p.name for p in logits.parent.iterdir()] == [
        "base.logits", ".base.logits.verified"]  # and the stamp of its check: the first KLD job's check is a stat
    r = rec["result"]
    assert r["logits_sha256"] == __import__("hashlib").sha256(logits.read_bytes()).hexdigest()
    assert r["logits_bytes_written"] == r["logits_bytes_forecast"] == size and r["ppl"] == 6.7232
    assert (r["forecast"]["n_vocab"], r["forecast"]["n_tokens"], r["forecast"]["n_chunk"]) == (10, 300, 2)
    assert "# logits forecast:" in (tmp_path / "base.log").read_text() and read_json(out)["stage"] == "kld_base"


# Pre-checks: nothing is measured from too few tokens, beyond the training context, or past the host's memory --

@pytest.mark.faults
@pytest.mark.parametrize(("n_tokens", "ctx", "chunks", "why"), [
    (1000, 512, None, r"too few tokens: the corpus has 1,000 tokens, 1024 tokens needed for ctx 512"),
    # the case: 64 tokens at ctx 16 scored 7 per chunk, 28 in all, and a PPL was accepted
    (64, 16, None, r"perplexity: ctx 16 with --chunks None scores 28 tokens, fewer than 100 .* 7 tokens"),
    (4096, 64, 3, r"scores 93 tokens, fewer than 100 .*raise perplexity.chunks or perplexity.ctx"),
])
def test_a_pass_on_too_few_tokens_is_refused_before_llama_perplexity_runs(tmp_path, n_tokens, ctx, chunks, why):
    started = tmp_path / "started"
    tool = stand_in(tmp_path / "bin/llama-perplexity", "ppl_q8_0_kv-q8_0.txt", extra=f"open({str(started)!r}, 'w')")
    build, manifest, corpus, corpus_json = inputs(tmp_path)
    tokens(tmp_path, n_tokens)
    out = tmp_path / "ppl.json"
    with pytest.raises(ToolFailed, match=why):
        perplexity_job(make_job(tool=tool, build_json=build, run=RUN, out=out, log=tmp_path / "ppl.log"),
                   manifest=manifest, corpus=corpus, corpus_record=corpus_json, ctx=ctx, kv="f16", chunks=chunks)
    assert not started.exists() and not out.exists()


def model_with_context(path, n_ctx_train: int, n_vocab: int = 10):
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(n_ctx_train)
    w.add_head_count(2)
    w.add_embedding_length(16)
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


@pytest.mark.faults
def test_a_context_beyond_the_models_training_context_is_refused(tmp_path):
    from ggufbench.measure.quality import check_context

    model = model_with_context(tmp_path / "m.gguf", 8192)
    check_context(model, 10, 8192, "perplexity", available=1 << 40)
    with pytest.raises(ToolFailed, match=r"perplexity.ctx 1,000,000 is beyond the model's training context "
                                         r"\(8,192, m.gguf\).*use at most 8192"):
        check_context(model, 10, 1_000_000, "perplexity", available=1 << 40)


@pytest.mark.faults
def test_a_context_whose_logits_would_not_fit_in_host_memory_is_refused(tmp_path):
    """The issue's ctx 1000000 on SmolLM2 (n_vocab 49152): 183 GiB of logits; the machine had 24 GiB."""
    from ggufbench.measure.quality import check_context

    model = model_with_context(tmp_path / "m.gguf", 2_000_000)
    with pytest.raises(ToolFailed, match=r"kld.ctx 1,000,000: llama-perplexity keeps 1,000,000 x 49,152 logits "
                                         r"\(183.1 GiB\) in host memory, and 24.0 GiB is available"):
        check_context(model, 49152, 1_000_000, "kld", available=24 << 30)
