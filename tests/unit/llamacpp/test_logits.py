"""The baseline-logits file: exact size, chunk count, and the budget/disk check before the pass starts."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.core.units import GIB
from ggufbench.llamacpp import logits as kld
from ggufbench.llamacpp.logits import LogitsForecast, check_forecast, check_logits_file, forecast, logits_file_size

# SmolLM2-135M: n_vocab 49152. Both sizes were measured on files written by llama-perplexity
# --kl-divergence-base (the CPU build of llama-cpp-python 0.3.36).
SMOL_VOCAB = 49152


MEASURED = {12: 300_859_316, 16: 401_145_748}


DiskUsage = namedtuple("DiskUsage", "total used free")


@pytest.mark.parametrize("n_chunk", sorted(MEASURED))
def test_logits_file_size_matches_measured_files(n_chunk):
    assert logits_file_size(512, SMOL_VOCAB, n_chunk) == MEASURED[n_chunk]


def test_logits_file_size_layout():
    # 20-byte header, then i32 tokens for every chunk, then (n_ctx - 1 - n_ctx/2) rows of nv uint16 per chunk
    one = logits_file_size(512, SMOL_VOCAB, 1)
    assert one == 20 + 4 * 512 + 2 * 255 * (SMOL_VOCAB + 4)
    assert logits_file_size(512, SMOL_VOCAB, 0) == 20
    # linear in chunks: the 4 chunks between the two measured files
    assert MEASURED[16] - MEASURED[12] == 4 * (one - 20)
    # odd n_vocab is rounded up to even (nv = 2*((n_vocab+1)/2) + 4)
    assert logits_file_size(512, 49153, 1) == logits_file_size(512, 49154, 1)
    assert logits_file_size(512, 49154, 1) > logits_file_size(512, 49152, 1)


def test_study_size_is_about_three_gib():
    # config.yaml's comment: a ~248K vocabulary, ctx 512 and 25 chunks give "about 3 GiB" of logits
    size = logits_file_size(512, 248_000, 25)
    assert 2.9 < size / GIB < 3.0


@pytest.mark.parametrize(
    ("n_tokens", "chunks", "expected"),
    [
        (6144, None, 12),   # the demo corpus' 12 chunks at ctx 512
        (6144, -1, 12),     # llama.cpp's default --chunks -1: all
        (6144, 100, 12),    # capped by the tokens
        (6144, 5, 5),
        (6655, None, 12),   # the remainder is not a chunk
        (1023, None, 1),
        (511, None, 0),
    ],
)
def test_n_chunks_used(n_tokens, chunks, expected):
    assert kld.n_chunks_used(n_tokens, 512, chunks) == expected


def test_forecast_within_budget(tmp_path):
    fc = forecast(512, SMOL_VOCAB, 6144 + 100, 12, budget_gib=1.0, target_dir=tmp_path)
    assert fc.n_chunk == 12
    assert fc.bytes == MEASURED[12]
    assert fc.budget_bytes == GIB
    assert fc.free_bytes > 0
    if fc.free_bytes >= GIB:
        # 1 GiB holds 42 chunks, but the corpus has only 12
        assert fc.largest_chunks_fitting == 12
    if fc.free_bytes > fc.bytes:
        check_forecast(fc)  # passes: 287 MiB within 1 GiB
    d = fc.to_dict()
    assert d["bytes"] == MEASURED[12] and d["n_vocab"] == SMOL_VOCAB


def test_forecast_budget_too_small_names_key_and_largest_chunks(tmp_path):
    if shutil.disk_usage(tmp_path).free < GIB:
        pytest.skip("needs 1 GiB free so that the budget, not the disk, is the limit")
    # 0.25 GiB = 268435456 bytes: 10 chunks (250716100 bytes) fit, 11 (275787708) do not
    fc = forecast(512, SMOL_VOCAB, 6144, None, budget_gib=0.25, target_dir=tmp_path)
    assert fc.n_chunk == 12 and fc.bytes == MEASURED[12]
    assert fc.largest_chunks_fitting == 10
    assert logits_file_size(512, SMOL_VOCAB, 10) <= fc.budget_bytes < logits_file_size(512, SMOL_VOCAB, 11)
    with pytest.raises(ToolFailed) as ei:
        check_forecast(fc)
    msg = str(ei.value)
    assert "kld.max_logits_gib" in msg
    assert "0.25 GiB" in msg
    assert "The largest --chunks that fits is 10" in msg
    assert "300,859,316 bytes" in msg
    assert "12 chunks of ctx 512" in msg
    assert "free disk space (" not in msg


@pytest.mark.faults
def test_forecast_disk_too_small(tmp_path, monkeypatch):
    # the disk, not the budget, is the limit: 5 chunks' worth of free space
    free = logits_file_size(512, SMOL_VOCAB, 5) + 1000
    monkeypatch.setattr(kld.shutil, "disk_usage", lambda p: DiskUsage(10 * free, 9 * free, free))
    fc = forecast(512, SMOL_VOCAB, 6144, 12, budget_gib=8.0, target_dir=tmp_path)
    assert fc.free_bytes == free
    assert fc.largest_chunks_fitting == 5
    with pytest.raises(ToolFailed) as ei:
        check_forecast(fc)
    msg = str(ei.value)
    assert "free disk space" in msg
    assert "kld.max_logits_gib =" not in msg  # 8 GiB is plenty: only the disk is named as over
    assert "The largest --chunks that fits is 5" in msg


def test_forecast_over_both(tmp_path, monkeypatch):
    monkeypatch.setattr(kld.shutil, "disk_usage", lambda p: DiskUsage(GIB, GIB, 1000))
    fc = forecast(512, SMOL_VOCAB, 6144, 12, budget_gib=0.1, target_dir=tmp_path)
    assert fc.largest_chunks_fitting == 0
    with pytest.raises(ToolFailed) as ei:
        check_forecast(fc)
    msg = str(ei.value)
    assert "kld.max_logits_gib" in msg and "free disk space" in msg
    assert "The largest --chunks that fits is 0" in msg


def test_forecast_corpus_shorter_than_one_chunk(tmp_path):
    fc = forecast(512, SMOL_VOCAB, 500, 12, budget_gib=1.0, target_dir=tmp_path)
    assert fc.n_chunk == 0
    with pytest.raises(ToolFailed, match="500 tokens; llama-perplexity needs at least 1024"):
        check_forecast(fc)


def test_forecast_one_chunk_but_under_two_contexts(tmp_path):
    """llama-perplexity refuses fewer than 2*ctx tokens even when one chunk would fit: refuse before the pass."""
    fc = forecast(512, SMOL_VOCAB, 900, 12, budget_gib=1.0, target_dir=tmp_path)
    assert fc.n_chunk == 1
    with pytest.raises(ToolFailed, match="900 tokens; llama-perplexity needs at least 1024"):
        check_forecast(fc)


def _fc(n_ctx, n_vocab, n_chunk):
    size = logits_file_size(n_ctx, n_vocab, n_chunk)
    return LogitsForecast(n_ctx, n_vocab, n_ctx * n_chunk, n_chunk, size, GIB, GIB, n_chunk)


def test_check_logits_file(tmp_path):
    fc = _fc(16, 10, 2)  # 20 + 4*16*2 + 2*2*7*14 = 540 bytes
    assert fc.bytes == 540
    good = tmp_path / "base.logits"
    good.write_bytes(b"_logits_" + bytes(fc.bytes - 8))
    check_logits_file(good, fc)

    short = tmp_path / "short.logits"
    short.write_bytes(b"_logits_" + bytes(fc.bytes - 9))
    with pytest.raises(ToolFailed, match="539 bytes written, 540 expected"):
        check_logits_file(short, fc)

    with pytest.raises(ToolFailed, match="-1 bytes written"):
        check_logits_file(tmp_path / "missing.logits", fc)

    bad = tmp_path / "bad.logits"
    bad.write_bytes(b"_lotigs_" + bytes(fc.bytes - 8))
    with pytest.raises(ToolFailed, match="_logits_' magic"):
        check_logits_file(bad, fc)
