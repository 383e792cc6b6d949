"""Sharded KLD (ggufbench.shards): the shard plan, the combination of shards' printed statistics, and shard texts.

The combination is checked on real llama-perplexity output (tests/data/cpu-0.3.36/sharded/, SmolLM2-135M F16 as
the baseline, Q2_K against it, ctx 512): the same chunks run unsharded and as two shards whose texts were made
by shard_text. Shards aligned to llama-perplexity's batches (4 chunks of 512 per batch of 2048) give the
unsharded run's per-token values, so the combination must equal it to the printed digits; unaligned shards
differ by batch-composition numerics only, well inside one standard error."""

from __future__ import annotations

import math
import re
import struct
import subprocess

import pytest

from ggufbench.errors import ConfigError, ToolFailed
from ggufbench.kld import GIB, logits_file_size, read_logits_tokens
from ggufbench.perplexity import parse_kld, parse_perplexity
from ggufbench.shards import (
    combine_kld,
    combine_ppl,
    cuttable,
    plan_shards,
    read_vocab,
    scored_tokens,
    shard_bytes,
    stats_from_sums,
    sums_from_kld,
    token_spans,
    tokens_differing,
)

from .conftest import DATA

SHARDED = DATA / "sharded"
MEANS = ["ppl_q", "ppl_base", "ln_ppl_ratio", "ppl_ratio", "ppl_diff", "kld_mean", "dp_mean_pct", "rms_dp_pct",
         "same_top_p_pct"]
UNCERTAINTIES = [f"{k}_uncertainty" for k in MEANS]


def kld(a: int, b: int) -> dict:
    return parse_kld((SHARDED / f"kld_q2_k_chunks{a}-{b}.txt").read_text(encoding="utf-8")).flat()


def parts(*ranges) -> list[tuple[dict, int]]:
    return [(parse_kld((SHARDED / f"kld_q2_k_chunks{a}-{b}.txt").read_text(encoding="utf-8")).to_dict(),
             scored_tokens(b - a, 512)) for a, b in ranges]


def printed_digits(key: str, value: float) -> float:
    """Half a unit of the last digit llama-perplexity prints for this statistic, relative where it prints
    significant digits. Percent values have 3 decimals; the rest 6."""
    return 0.0005 if key.endswith("_pct") or key.endswith("_pct_uncertainty") else 5e-7


# --- the plan ---------------------------------------------------------------------------------------------------

def test_shards_tile_the_chunks_within_the_budget_aligned_to_batches():
    unsharded = logits_file_size(512, 49152, 179)
    p = plan_shards(91872, 512, 49152, None, unsharded / 4 / GIB)  # the demo corpus, a quarter of its logits
    assert p.n_chunk == 179 and p.chunks_per_shard == 44 and p.chunks_per_shard % 4 == 0
    assert p.shards[0] == [0, 44] and p.shards[-1] == [176, 179] and len(p.shards) == 5
    assert all(a == b for (_, a), (b, _) in zip(p.shards, p.shards[1:], strict=False))
    assert max(p.shard_logits_bytes) <= p.disk_budget_bytes and p.unsharded_logits_bytes == unsharded
    assert p.shard_logits_bytes[0] == logits_file_size(512, 49152, 44)


def test_parallel_splits_the_budget_and_chunks_limit_the_total():
    one = plan_shards(91872, 512, 49152, 8, 1.0)
    assert one.shards == [[0, 8]]
    two = plan_shards(91872, 512, 49152, None, 0.25, parallel=2)
    assert 2 * max(two.shard_logits_bytes) <= two.disk_budget_bytes
    assert two.chunks_per_shard == 5 and all((b - a) % 4 == 0 for a, b in two.shards[:-1])  # batch-aligned


def test_a_last_shard_of_one_chunk_borrows_one_from_the_shard_before():
    # room for 2 chunks: 5 chunks -> [0,2) [2,3) [3,5); the 1-chunk shard's text runs on into the next chunk
    p = plan_shards(5 * 512 + 10, 512, 49152, None, logits_file_size(512, 49152, 2) / GIB)
    assert p.shards == [[0, 2], [2, 3], [3, 5]]


def test_shards_start_only_where_a_text_can_start():
    # room for 5 chunks: batch-aligned shards of 4 where they can start; chunk 4 starts inside a character, so
    # the first shard takes 5 instead
    budget = logits_file_size(512, 49152, 5) / GIB
    assert plan_shards(10 * 512 + 10, 512, 49152, None, budget).shards == [[0, 4], [4, 8], [8, 10]]
    p = plan_shards(10 * 512 + 10, 512, 49152, None, budget, can_start=lambda c: c != 4)
    assert p.shards == [[0, 5], [5, 10]]
    # and no shard is left with a single last chunk: 9 chunks in shards of up to 4 -> 4 + 3 + 2, not 4 + 4 + 1
    four = logits_file_size(512, 49152, 4) / GIB
    assert plan_shards(9 * 512 + 10, 512, 49152, None, four).shards == [[0, 4], [4, 7], [7, 9]]
    with pytest.raises(ToolFailed, match="no chunk boundary in 1..2 can start a shard"):
        plan_shards(10 * 512 + 10, 512, 49152, None, logits_file_size(512, 49152, 2) / GIB,
                    can_start=lambda c: c in (0, 10))


def test_a_budget_below_two_chunks_names_the_key_and_the_least_that_works():
    with pytest.raises(ConfigError, match=r"kld.sharded.disk_budget_gib = 0.01 .* at least 0.047 GiB"):
        plan_shards(91872, 512, 49152, None, 0.01)
    with pytest.raises(ToolFailed, match="1 chunk"):
        plan_shards(700, 512, 49152, None, 1.0)


# --- combining what llama-perplexity printed ------------------------------------------------------------------------

def test_one_shard_combined_alone_gives_back_its_own_numbers():
    (r, n), = parts((0, 3))
    s = stats_from_sums(sums_from_kld(r, n))
    flat = kld(0, 3)
    for key in MEANS + UNCERTAINTIES:
        # uncertainties printed with few significant digits come back to within their rounding
        tol = printed_digits(key, flat[key]) + 2e-3 * abs(flat[key])
        assert s[key] == pytest.approx(flat[key], abs=tol), key


def test_batch_aligned_shards_equal_the_unsharded_run_to_the_printed_digits():
    whole, c = kld(0, 8), combine_kld(parts((0, 4), (4, 8)))
    for key in MEANS:
        assert abs(c[key] - whole[key]) <= 2 * printed_digits(key, whole[key]) + 1e-6 * abs(whole[key]), \
            (key, whole[key], c[key])
    for key in UNCERTAINTIES:
        assert c[key] == pytest.approx(whole[key], rel=2e-3, abs=1e-6), key
    assert c["n_tokens_scored"] == scored_tokens(8, 512) == 2040
    assert c["kld_max"] == whole["kld_max"] and c["kld_min"] == whole["kld_min"]  # exact
    assert c["percentiles_estimated"] is True
    lo, hi = c["percentile_shard_spread"]["kld"]["median"]
    assert lo <= c["kld_median"] <= hi


def test_unaligned_shards_agree_within_one_combined_standard_error():
    whole, c = kld(0, 6), combine_kld(parts((0, 3), (3, 6)))
    for key in ("kld_mean", "ppl_q", "same_top_p_pct"):
        se = math.hypot(whole[f"{key}_uncertainty"], c[f"{key}_uncertainty"])
        assert abs(c[key] - whole[key]) < se, (key, whole[key], c[key], se)
    # the baseline's own numbers (F16, unaffected by batch composition here) still match to the digits
    assert c["ppl_base"] == pytest.approx(whole["ppl_base"], abs=1e-4)


def test_baseline_ppl_combines_from_the_shards_baseline_passes():
    shard = [parse_perplexity((SHARDED / f"base_chunks{a}-{b}.txt").read_text()) for a, b in ((0, 4), (4, 8))]
    whole = parse_perplexity((SHARDED / "base_chunks0-8.txt").read_text())
    ppl, unc = combine_ppl([(r.ppl, r.ppl_uncertainty, scored_tokens(4, 512)) for r in shard])
    assert ppl == pytest.approx(whole.ppl, abs=1e-4) and unc == pytest.approx(whole.ppl_uncertainty, abs=2e-5)


# --- shard texts and the logits header --------------------------------------------------------------------------

def test_tokens_differing_ignores_the_chunk_first_token_a_bos_model_replaces():
    assert tokens_differing([1, 2, 3, 4], [1, 2, 3, 4], 2, False) == 0
    assert tokens_differing([1, 2, 3, 4], [9, 2, 8, 4], 2, False) == 2
    assert tokens_differing([1, 2, 3, 4], [9, 2, 8, 4], 2, True) == 0
    assert tokens_differing([1, 2, 3, 4], [1, 2], 2, False) == 2


def test_the_logits_header_gives_its_tokens_and_a_short_file_is_refused(tmp_path):
    path = tmp_path / "x.logits"
    path.write_bytes(b"_logits_" + struct.pack("<Iii", 4, 10, 2) + struct.pack("<8i", *range(8)) + b"\0" * 16)
    assert read_logits_tokens(path) == (4, 10, 2, list(range(8)))
    path.write_bytes(b"_logits_" + struct.pack("<Iii", 4, 10, 2) + struct.pack("<3i", 1, 2, 3))
    with pytest.raises(ToolFailed, match="ends early"):
        read_logits_tokens(path)
    path.write_bytes(b"junk" * 10)
    with pytest.raises(ToolFailed, match="_logits_"):
        read_logits_tokens(path)


GPT2_VOCABS = ["qwen2", "qwen35", "llama-bpe", "command-r", "gpt-2", "deepseek-llm", "starcoder", "falcon"]


def _ids(llama_bin, vocab, path, *extra) -> list[int]:
    out = subprocess.run([str(llama_bin / "llama-tokenize"), "-m", str(vocab), "-f", str(path), "--ids",
                          "--log-disable", "--no-parse-special", *extra], capture_output=True, text=True, check=True)
    return [int(x) for x in re.search(r"\[([\d,\s]*)\]", out.stdout).group(1).split(",")]


# what broke a first version of shard texts: control bytes the tokenizer drops (0x1d between quotes), invalid
# UTF-8 it reads as U+FFFD (a lone 0x85), characters byte-level BPE splits over two tokens; and backslash
# escapes, which llama-perplexity leaves as they are
AWKWARD = ('   | "\x1c"   | File Separator |\n   | "\x1d"   | Group Separator |\n   | "\\x85"   | Next Line |\n'
           '   tab ("\\t"), "\\n" and "\\r\\n"; caf\u00e9 \u2028 end\n')
LONE = b"   lone bytes: \x85 and \xff\xfe here\n"


@pytest.mark.parametrize("name", GPT2_VOCABS)
def test_shard_texts_tokenize_back_to_their_chunks(name, llama_bin, llama_src, tmp_path):
    """llama.cpp's own vocab GGUFs: a text with awkward bytes, tokenized as llama-perplexity reads it (no escape
    processing), shard texts cut at chunk boundaries and re-tokenized: the same ids."""
    vocab_file = llama_src / "models" / f"ggml-vocab-{name}.gguf"
    corpus = tmp_path / "corpus.txt"
    readme = (llama_src / "README.md").read_text(encoding="utf-8")
    corpus.write_bytes(readme[:20000].encode() + (AWKWARD.encode() + LONE) * 30 + readme[20000:40000].encode())
    ids = _ids(llama_bin, vocab_file, corpus, "--no-escape")
    v = read_vocab(vocab_file)
    add_bos = ids[0] == v.bos_id
    text = corpus.read_bytes()
    ends = token_spans(ids, v, text)
    ctx, compared, differing, skipped = 128, 0, 0, 0
    ok = cuttable(ends, ctx, add_bos)
    for a in range(0, len(ids) // ctx - 2, 2):
        if not ok(a):  # a boundary inside a character: plan_shards never starts a shard there
            skipped += 1
            continue
        start, end = shard_bytes(ends, len(text), ctx, a, a + 2, add_bos)
        shard = tmp_path / "shard.txt"
        shard.write_bytes(text[start:end])
        got = _ids(llama_bin, vocab_file, shard, "--no-escape")[:2 * ctx]
        differing += tokens_differing(ids[a * ctx:(a + 2) * ctx], got, ctx, add_bos)
        compared += 2 * ctx
    assert compared >= 3000 and differing == 0 and skipped <= 3


def test_a_sentencepiece_vocab_is_refused_with_the_reason(llama_src):
    with pytest.raises(ConfigError, match="'llama' tokenizer; only gpt2 .* kld.mode: chunks"):
        read_vocab(llama_src / "models" / "ggml-vocab-llama-spm.gguf")
