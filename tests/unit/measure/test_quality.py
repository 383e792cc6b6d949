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
from tests.support import DATA

CPU = DATA / "cpu-0.3.36"
RUN = {"n_gpu_layers": 99, "flash_attn": "on"}


def stand_in(path, capture: str | None, exit_code: int = 0, extra: str = ""):
    """An executable that runs `extra` (Python), prints a real capture and exits with exit_code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    show = f"sys.stdout.write(open({str(CPU / capture)!r}, encoding='utf-8').read())" if capture else ""
    path.write_text(f"#!{sys.executable}\nimport sys\n{extra}\n{show}\nsys.exit({exit_code})\n")
    path.chmod(0o755)
    return path


def inputs(tmp_path, quant="Q8_0", model_file=None):
    build = tmp_path / "build.json"
    write_json(build, {"build": "cpu", "key": "k1", "version": "0.5.0-dev", "commit": "0c1e570", "backend": "CPU"})
    manifest = tmp_path / quant / "manifest.json"
    write_json(manifest, {"model": "smol", "quant": quant, "origin": {"kind": "quantize"},
                          "files": [{"path": model_file or f"smol-{quant}.gguf", "size": 145_000_000,
                                     "sha256": f"sha-{quant}"}]})
    corpus_json = tmp_path / "corpus.json"
    write_json(corpus_json, {"name": "pydocs", "sha256": "c0ffee", "source": {"python_docs": {}}})
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    return build, manifest, corpus, corpus_json


def test_perplexity_job_writes_the_parsed_cell_with_its_command_and_corpus(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", "ppl_q8_0_kv-q8_0.txt")
    build, manifest, corpus, corpus_json = inputs(tmp_path)
    out, log = tmp_path / "ppl.json", tmp_path / "ppl.log"
    rec = perplexity_job(tool, build, manifest, corpus, corpus_json, 512, "q8_0-f16", 8, 2, RUN, {}, out, log)
    assert read_json(out) == json.loads(json.dumps(rec, default=str))
    assert rec["stage"] == "perplexity" and rec["result"]["ppl"] == 12.0056
    assert (rec["params"]["type_k"], rec["params"]["type_v"], rec["params"]["chunks"]) == ("q8_0", "f16", 8)
    cmd = rec["tool"]["cmd"]
    assert cmd[cmd.index("-ctk") + 1] == "q8_0" and cmd[cmd.index("-ctv") + 1] == "f16"
    assert cmd[-4:] == ["-f", str(corpus), "--chunks", "8"] and cmd[cmd.index("-m") + 1].endswith("smol-Q8_0.gguf")
    assert "-ngl" not in cmd  # a CPU build
    p = rec["provenance"]
    assert (p["quant"], p["file_sha256"], p["corpus"], p["build_key"]) == ("Q8_0", "sha-Q8_0", "pydocs", "k1")
    assert "Final estimate: PPL = 12.0056" in log.read_text()


def test_perplexity_job_exiting_0_without_a_result_fails_by_name_and_writes_nothing(tmp_path):
    """llama-perplexity exits 0 on a corpus that is too short: the job must not write a cell."""
    tool = stand_in(tmp_path / "bin/llama-perplexity", "fail_too_few_tokens.txt")
    build, manifest, corpus, corpus_json = inputs(tmp_path)
    out = tmp_path / "ppl.json"
    with pytest.raises(ToolFailed, match=r"too few tokens.*1024 tokens needed for ctx 512"):
        perplexity_job(tool, build, manifest, corpus, corpus_json, 512, "f16", None, 2, RUN, {}, out,
                       tmp_path / "ppl.log")
    assert not out.exists() and list(tmp_path.glob(".ppl.json*")) == []


def base_record(tmp_path, build, corpus, corpus_json):
    tool = stand_in(tmp_path / "base/llama-perplexity", "ppl_q8_0_kv-f16.txt")
    _, f16, _, _ = inputs(tmp_path, "F16")
    out = tmp_path / "base.json"
    perplexity_job(tool, build, f16, corpus, corpus_json, 512, "f16", 12, 2, RUN, {}, out, tmp_path / "base.log")
    return out


def test_kld_job_takes_corpus_baseline_and_chunks_from_the_baseline_record(tmp_path):
    build, manifest, corpus, corpus_json = inputs(tmp_path, "Q2_K")
    base = base_record(tmp_path, build, corpus, corpus_json)
    tool = stand_in(tmp_path / "bin/llama-perplexity", "kld_q2_k.txt")
    out = tmp_path / "kld.json"
    rec = kld_job(tool, build, manifest, base, tmp_path / "base.logits", 512, "q8_0", 2, RUN, {}, out,
                  tmp_path / "kld.log")
    assert read_json(out)["result"] == rec["result"]
    assert rec["stage"] == "kld" and rec["params"]["chunks"] == 12
    p = rec["provenance"]
    assert (p["quant"], p["baseline_quant"], p["baseline_sha256"], p["baseline_kv"]) == ("Q2_K", "F16", "sha-F16",
                                                                                          "f16")
    assert (p["corpus"], p["corpus_sha256"]) == ("pydocs", "c0ffee")
    r = rec["result"]
    assert (r["kld_mean"], r["same_top_p_pct"]) == (0.416352, 68.725) and "kld_p99_9" in r  # one flat row
    assert rec["tool"]["cmd"][-3:] == ["--kl-divergence-base", str(tmp_path / "base.logits"), "--kl-divergence"]


@pytest.mark.parametrize(("capture", "why"), [
    ("fail_truncated_logits.txt", "truncated; rerun the baseline pass"),
    ("fail_bad_logits.txt", "not a llama.cpp logits file"),
    ("fail_kld_too_few_scored.txt", "below 100 scored tokens"),
])
def test_kld_job_on_a_real_failure_raises_its_reason_and_writes_no_record(tmp_path, capture, why):
    build, manifest, corpus, corpus_json = inputs(tmp_path, "Q2_K")
    base = base_record(tmp_path, build, corpus, corpus_json)
    tool = stand_in(tmp_path / "bin/llama-perplexity", capture)
    out = tmp_path / "kld.json"
    with pytest.raises(ToolFailed, match=why):
        kld_job(tool, build, manifest, base, tmp_path / "base.logits", 512, "f16", 2, RUN, {}, out,
                tmp_path / "kld.log")
    assert not out.exists()


def tiny_gguf(path, n_vocab: int) -> None:
    """A GGUF v3 with no tensors: general.architecture and a vocabulary of n_vocab tokens (what the job reads)."""
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b
    kv = s(b"general.architecture") + struct.pack("<I", 8) + s(b"llama")
    kv += s(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, n_vocab) + b"".join(
        s(f"t{i}".encode()) for i in range(n_vocab))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv)


@pytest.mark.parametrize("complete", [True, False])
def test_kld_base_job_keeps_the_logits_only_when_exactly_the_forecast_size(tmp_path, complete):
    """A baseline pass whose tool says it finished but wrote a short logits file fails, and leaves neither the
    logits (under its name or the partial one) nor a record; a complete one is renamed into place."""
    build, manifest, corpus, corpus_json = inputs(tmp_path, "F16", model_file="smol-F16.gguf")
    tiny_gguf(tmp_path / "F16/smol-F16.gguf", 10)
    size = logits_file_size(128, 10, 2)  # 300 tokens: 2 chunks of 128
    stand_in(tmp_path / "bin/llama-tokenize", None, extra="print('[' + ', '.join(map(str, range(300))) + ']')")
    write = (f"p = sys.argv[sys.argv.index('--kl-divergence-base') + 1]\n"
             f"open(p, 'wb').write(b'_logits_' + bytes({size if complete else size // 2} - 8))")
    tool = stand_in(tmp_path / "bin/llama-perplexity", "kld_base_small.txt", extra=write)
    logits, out = tmp_path / "logits/base.logits", tmp_path / "base.json"
    args = (tool, build, manifest, corpus, corpus_json, 128, "f16", 2, 1.0, 2, RUN, {}, logits, out,
            tmp_path / "base.log")
    if not complete:
        with pytest.raises(ToolFailed, match=f"{size // 2:,} bytes written, {size:,} expected for 2 chunks"):
            kld_base_job(*args)
        assert not out.exists() and list(logits.parent.iterdir()) == []
        return
    rec = kld_base_job(*args)
    assert logits.stat().st_size == size and list(logits.parent.iterdir()) == [logits]
    r = rec["result"]
    assert r["logits_bytes_written"] == r["logits_bytes_forecast"] == size and r["ppl"] == 6.7232
    assert (r["forecast"]["n_vocab"], r["forecast"]["n_tokens"], r["forecast"]["n_chunk"]) == (10, 300, 2)
    assert "# logits forecast:" in (tmp_path / "base.log").read_text() and read_json(out)["stage"] == "kld_base"
