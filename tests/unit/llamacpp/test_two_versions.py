"""The parsers and forecasts on two real llama.cpp versions (issue 18): tests/data/cpu-0.3.16 (4227c9b,
2025-08-14) and tests/data/cpu-0.3.36 (0c1e570, 2026-10-01), the same demo quants, corpus and 12 chunks at ctx 512,
captured with tools/capture_version.sh. What moved between them: the KL-divergence pass of 4227c9b evaluates
one chunk at a time (n_batch = n_ctx, no "computing over" line), prints 99.0% twice and no 95%/90%/0.1% KLD
percentiles; its llama-bench JSON lacks the fields added since (n_cpu_moe, devices, fit_target, ...)."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp.bench_output import parse_bench_jsonl
from ggufbench.llamacpp.logits import logits_file_size
from ggufbench.llamacpp.perplexity_output import parse_kld, parse_perplexity
from ggufbench.measure.shards.plan import check_batching
from tests.support import DATA

OLD, NEW = DATA / "cpu-0.3.16", DATA / "cpu-0.3.36"
N_VOCAB = 49152  # SmolLM2's


def read(d, name):
    return (d / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("d", [OLD, NEW], ids=["0.3.16", "0.3.36"])
def test_ppl_and_baseline_passes_read_the_same_on_both(d):
    for name in ("ppl_q8_0_kv-f16.txt", "kld_base_f16.txt"):
        r = parse_perplexity(read(d, name))
        assert (r.n_chunks, r.n_ctx, r.n_batch, r.n_seq) == (12, 512, 2048, 4), name
        assert len(r.chunks) == 12 and r.chunk_ppl[-1] == r.ppl


@pytest.mark.parametrize(("d", "n_batch", "n_seq"), [(OLD, 512, 1), (NEW, 2048, 4)], ids=["0.3.16", "0.3.36"])
def test_kld_passes_say_how_they_were_batched(d, n_batch, n_seq):
    for q in ("q8_0", "q2_k"):
        r = parse_kld(read(d, f"kld_{q}.txt"))
        assert (r.n_chunks, r.n_ctx, r.n_batch, r.n_seq) == (12, 512, n_batch, n_seq)
        assert len(r.chunks) == 12
        # the KLD pass's baseline PPL is the baseline pass's, to its printed digits
        assert r.ppl_base == pytest.approx(parse_perplexity(read(d, "kld_base_f16.txt")).ppl, abs=1e-4)


def test_the_older_kld_percentiles_are_fewer_and_read_as_such():
    old, new = (parse_kld(read(d, "kld_q2_k.txt")) for d in (OLD, NEW))
    assert set(new.kld_percentiles) - set(old.kld_percentiles) == {"p95", "p90", "p0_1"}
    assert {"max", "p99_9", "p99", "median", "p10", "p5", "p1", "min"} <= set(old.kld_percentiles)
    assert set(old.dp_percentiles_pct) == set(new.dp_percentiles_pct)


def test_the_logits_forecast_is_the_file_the_older_baseline_pass_wrote():
    assert int(read(OLD, "kld_base_f16.size")) == logits_file_size(512, N_VOCAB, 12)


@pytest.mark.parametrize("d", [OLD, NEW], ids=["0.3.16", "0.3.36"])
def test_each_versions_batching_matches_the_shard_plans(d):
    """Shards are aligned to n_batch / n_ctx = 4 chunks at ctx 512: both versions' baseline passes batch 4, the
    KLD pass 4 (0.3.36) or 1 (0.3.16, which any alignment matches)."""
    check_batching(parse_perplexity(read(d, "kld_base_f16.txt")).n_seq, 512, "baseline pass")
    check_batching(parse_kld(read(d, "kld_q2_k.txt")).n_seq, 512, "KLD pass")
    with pytest.raises(ToolFailed, match="evaluated 3 chunks per batch, but the shard plan aligned shards to 4"):
        check_batching(3, 512, "KLD pass")


@pytest.mark.parametrize("d", [OLD, NEW], ids=["0.3.16", "0.3.36"])
def test_llama_bench_jsonl_of_both(d):
    rows = parse_bench_jsonl(read(d, "bench_q8_0.jsonl"))
    assert [r["test"] for r in rows] == ["pp512", "tg128"]
    assert all(r["avg_ts"] > 0 and len(r["samples_ts"]) == 3 for r in rows)


def test_the_older_llama_bench_lacks_the_newer_fields():
    old, new = (parse_bench_jsonl(read(d, "bench_q8_0.jsonl"))[0] for d in (OLD, NEW))
    assert set(new) - set(old) == {"devices", "fit_min_ctx", "fit_target", "lazy_mode", "load_mode", "n_cpu_moe",
                                   "no_host", "repack"}
    assert set(old) - set(new) == {"defrag_thold", "use_mmap"}  # use_mmap became load_mode
    assert old["build_commit"] == "4227c9be4268"
    # flash_attn was a bool (-fa 1: true), is -1/0/1 now (this capture: -1, auto): read as one type
    assert (old["flash_attn"], new["flash_attn"]) == ("on", "auto")
