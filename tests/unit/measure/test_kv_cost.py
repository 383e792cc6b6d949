"""The KV-cost statistics as pure functions (no llama.cpp): sums combine exactly, llama-perplexity's formulas, the
histogram percentiles within a bin, the paired difference over chunks, the verdict and the chunks it would take; and
the job's result and table rows from a real captured scorer run (tests/data/kvscore/)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp.kvscore_output import Histogram, parse_kvscore
from ggufbench.measure.kv_cost import (
    PERCENT_LEVELS,
    Sums,
    chunks_needed,
    combine,
    dp_segments,
    kld_segments,
    kv_cost_position_rows,
    kv_cost_result,
    kv_cost_rows,
    mean_and_uncertainty,
    paired,
    percentiles,
    require_scorer,
    scorer_memory,
    summary,
    t975,
    verdict,
)
from tests.support import DATA

KVSCORE = DATA / "kvscore"


def token_sums(values: list[tuple[float, float, float, float, bool]]) -> Sums:
    """Sums of tokens given as (nll, nll_base, kld, dp, same_top), accumulated as the scorer does."""
    s = Sums()
    for nll, base, kld, dp, top in values:
        s = s + Sums(count=1, same_top=int(top), sum_nll=nll, sum_nll2=nll * nll, sum_nll_base=base,
                     sum_nll_base2=base * base, sum_nll_nll_base=nll * base, sum_kld=kld, sum_kld2=kld * kld,
                     sum_dp=dp, sum_dp2=dp * dp, sum_dp4=dp ** 4, max_kld=kld, max_abs_dp=abs(dp))
    return s


def random_tokens(n: int, seed: int) -> list[tuple[float, float, float, float, bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        base = rng.expovariate(0.4)
        kld = rng.expovariate(2000.0)
        nll = base + rng.gauss(0.0, 0.05)
        out.append((nll, base, kld, math.exp(-nll) - math.exp(-base), rng.random() < 0.97))
    return out


def test_sums_of_chunks_combine_exactly_in_any_order():
    toks = random_tokens(600, 1)
    chunks = [token_sums(toks[i:i + 100]) for i in range(0, 600, 100)]
    whole = token_sums(toks)
    for order in (chunks, chunks[::-1], chunks[3:] + chunks[:3]):
        got = combine(order)
        assert got.count == whole.count and got.same_top == whole.same_top and got.max_kld == whole.max_kld
        assert got.sum_kld == pytest.approx(whole.sum_kld, rel=1e-12)
        assert got.sum_nll_nll_base == pytest.approx(whole.sum_nll_nll_base, rel=1e-12)
    assert combine([]) == Sums()


def test_rows_as_dicts_and_as_sums_are_the_same():
    s = token_sums(random_tokens(50, 2))
    assert Sums.of(s.__dict__) == s and combine([s.__dict__]) == s


def test_summary_is_llama_perplexitys_formulas():
    toks = random_tokens(2000, 3)
    s = token_sums(toks)
    out = summary(s)
    n = len(toks)
    nll = [t[0] for t in toks]
    kld = [t[2] for t in toks]
    mean_nll = sum(nll) / n
    # mean_and_uncertainty: sqrt((E[x²] − E[x]²)/(n − 1)), as perplexity.cpp's lambda
    assert out["ppl_q"] == pytest.approx(math.exp(mean_nll))
    assert out["ppl_q_uncertainty"] == pytest.approx(
        math.exp(mean_nll) * math.sqrt((sum(x * x for x in nll) / n - mean_nll ** 2) / (n - 1)))
    assert out["kld_mean"] == pytest.approx(sum(kld) / n)
    assert out["kld_mean_uncertainty"] == pytest.approx(
        math.sqrt((sum(x * x for x in kld) / n - (sum(kld) / n) ** 2) / (n - 1)))
    top = sum(t[4] for t in toks) / n
    assert out["same_top_p_pct"] == pytest.approx(100 * top)
    assert out["same_top_p_pct_uncertainty"] == pytest.approx(100 * math.sqrt(top * (1 - top) / (n - 1)))
    assert out["ln_ppl_ratio"] == pytest.approx(mean_nll - sum(t[1] for t in toks) / n)
    # correlated nll and nll_base: the ratio's ± is far below the quadrature of the two
    assert out["ln_ppl_ratio_uncertainty"] < 0.2 * math.hypot(out["ppl_q_uncertainty"] / out["ppl_q"],
                                                              out["ppl_base_uncertainty"] / out["ppl_base"])
    assert out["rms_dp_pct"] == pytest.approx(100 * math.sqrt(sum(t[3] ** 2 for t in toks) / n))


def test_no_uncertainty_below_eleven_tokens_as_llama_perplexity():
    assert mean_and_uncertainty(10.0, 20.0, 10) == (1.0, 0.0)
    assert mean_and_uncertainty(0.0, 0.0, 0) == (0.0, 0.0)
    assert mean_and_uncertainty(11.0, 33.0, 11)[1] > 0


def log_hist(values: list[float], lo: int, hi: int, per_decade: int = 50) -> Histogram:
    counts: dict[int, int] = {}
    below = above = 0
    for v in values:
        if not v >= 10.0 ** lo:
            below += 1
            continue
        i = math.floor((math.log10(v) - lo) * per_decade)
        if i >= (hi - lo) * per_decade:
            above += 1
        else:
            counts[i] = counts.get(i, 0) + 1
    return Histogram(lo=lo, hi=hi, per_decade=per_decade, below=below, above=above, counts=counts)


def exact_percentile(values: list[float], q: float) -> float:
    """perplexity.cpp's percentile lambda on sorted values."""
    v = sorted(values)
    p = q * (len(v) - 1)
    i = int(p)
    return (1 - (p - i)) * v[i] + (p - i) * v[min(i + 1, len(v) - 1)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=1e-9, max_value=5.0), min_size=20, max_size=400), st.sampled_from(
    list(PERCENT_LEVELS.values())))
def test_kld_percentiles_from_the_histogram_are_within_a_bin_of_the_exact_ones(values, q):
    got = percentiles(kld_segments(log_hist(values, -12, 2)), {"q": q})["q"]
    want = exact_percentile(values, q)
    width = 10 ** (1 / 50)  # one bin: 4.7 %
    assert want / width ** 2 <= got <= want * width ** 2


def test_dp_percentiles_in_order_across_the_sign():
    rng = random.Random(5)
    values = [rng.gauss(0, 0.01) for _ in range(5000)] + [0.0] * 50
    pos = log_hist([v for v in values if v >= 0], -9, 1)
    neg = log_hist([-v for v in values if v < 0], -9, 1)
    got = percentiles(dp_segments(pos, neg), {"p1": 0.01, "median": 0.5, "p99": 0.99})
    assert got["p1"] < 0 < got["p99"] and abs(got["median"]) < 1e-3
    for k, q in (("p1", 0.01), ("p99", 0.99)):
        assert got[k] == pytest.approx(exact_percentile(values, q), rel=0.1)


def test_paired_difference_over_the_same_chunks():
    a = [0.30, 0.32, 0.29, 0.35, 0.31, 0.33]
    b = [0.20, 0.21, 0.19, 0.24, 0.22, 0.22]
    p = paired(a, b)
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / 6
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 5)
    assert p.n_chunks == 6 and p.diff == pytest.approx(mean) and p.sd == pytest.approx(sd)
    assert p.half_width == pytest.approx(t975(5) * sd / math.sqrt(6)) and p.resolved
    assert paired(a).diff == pytest.approx(sum(a) / 6)
    with pytest.raises(ValueError, match="over 6 and 2 chunks"):
        paired(a, b[:2])
    one = paired([0.1])
    assert one.n_chunks == 1 and not one.resolved and one.half_width == math.inf


def test_chunks_needed_resolve_a_difference_of_that_size():
    # 1.96 sd / sqrt(n) < |diff|: n = ceil((1.96 * 0.02 / 0.004)^2) = 97
    assert chunks_needed(0.004, 0.02) == 97
    assert chunks_needed(0.004, 0.02, margin=0.002) == 385
    assert chunks_needed(0.0, 0.02) is None and chunks_needed(0.01, 0.0) is None
    assert chunks_needed(1.0, 0.001) == 2  # never fewer than two chunks


def test_verdict_free_costs_unresolved():
    tight_low = paired([0.00030, 0.00031, 0.00029, 0.00032])
    assert verdict(tight_low, 0.001)["verdict"] == "free"
    high = paired([0.051, 0.053, 0.050, 0.055])
    assert verdict(high, 0.001)["verdict"] == "costs"
    wide = paired([0.0002, 0.0019, 0.0004, 0.0016])
    v = verdict(wide, 0.001)
    assert v["verdict"] == "unresolved" and v["low"] < 0.001 < v["high"] and v["chunks_needed"] > 4
    assert verdict(paired([0.1]), 0.001)["verdict"] == "too few chunks"


# A real run: tests/data/kvscore/smollm2_f16_ctx512.jsonl (see its README) ------------------------------------------

@pytest.fixture(scope="module")
def score():
    return parse_kvscore((KVSCORE / "smollm2_f16_ctx512.jsonl").read_text())


def test_the_result_of_a_real_run(score):
    res = kv_cost_result(score)
    assert res["n_ctx"] == 512 and res["scored_per_chunk"] == 255 and res["positions_per_chunk"] == 511
    q8, q4 = res["cells"]
    assert (q8["kv"], q4["kv"]) == ("q8_0", "q4_0")
    half = q8["second_half"]
    assert half["count"] == score.n_chunk * 255
    assert 0 < half["kld_mean"] < q4["second_half"]["kld_mean"]  # q4_0 KV costs more than q8_0
    assert half["kld_percentiles"]["median"] < half["kld_mean"] < half["kld_percentiles"]["p99"] <= half["kld_max"]
    assert q8["all_positions"]["count"] == score.n_chunk * 511
    assert [(b["pos_lo"], b["pos_hi"]) for b in q8["positions"]] == score.bins
    assert sum(b["count"] for b in q8["positions"]) == q8["all_positions"]["count"]
    # the chunk-clustered ± is the spread of the chunks' means, beside llama-perplexity's
    assert half["kld_mean_se_chunks"] > 0 and half["paired_kld"]["n_chunks"] == score.n_chunk
    assert res["memory"]["peak_rss_bytes"] > res["memory"]["logits_host_bytes"] > 0


def test_table_rows_name_both_views_apart(score):
    rec = {"result": kv_cost_result(score), "params": {"threads": 2},
           "provenance": {"build": "cpu", "model": "smollm2-135m", "quant": "F16"}}
    rows = kv_cost_rows(rec)
    assert [r["kv"] for r in rows] == ["q8_0", "q4_0"]
    r = rows[0]
    assert r["half_count"] == score.n_chunk * 255 and r["all_count"] == score.n_chunk * 511
    assert r["half_kld_mean"] != r["all_kld_mean"] and "half_kld_p99" in r and r["ctx"] == 512
    pos = kv_cost_position_rows(rec)
    assert len(pos) == 2 * len(score.bins) and pos[0]["growth_vs_first"] == 0.0
    assert {p["kv"] for p in pos} == {"q8_0", "q4_0"}


def test_a_build_without_the_scorer_is_named_with_what_to_do():
    with pytest.raises(ToolFailed, match=r"build cpu has no ggufbench-kvscore \(the build was made before ggufbench "
                                         r"built it\); rebuild it: snakemake --forcerun build_llama_cpp"):
        require_scorer({"build": "cpu", "tools": ["llama-perplexity"]})
    with pytest.raises(ToolFailed, match="it did not compile"):
        require_scorer({"build": "cpu", "tools": [], "missing_tools": {"ggufbench-kvscore": "it did not compile"}})
    require_scorer({"build": "cpu", "tools": ["ggufbench-kvscore"]})


def test_the_scorers_memory_does_not_depend_on_the_context():
    # 248K vocabulary, 512 tokens a decode, f16 reference + 3 KV types: 2 GB at any context (llama-perplexity's
    # KLD pass: 32.5 GB of logits at 32K)
    assert scorer_memory(3, 512, 248_320) == 4 * 512 * 248_320 * 4


# The job, with a stand-in scorer that prints the real capture (as tests/unit/measure/test_quality.py does) ----------

def stand_in(path, stdout_file=None, lines: int | None = None, exit_code: int = 0):
    """An executable printing (the first `lines` lines of) a captured stdout, a line on stderr, and exiting."""
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    show = ""
    if stdout_file:
        show = (f"text = open({str(stdout_file)!r}).read().splitlines(keepends=True)\n"
                f"sys.stdout.write(''.join(text[:{lines}]))\n")
    path.write_text(f"#!{sys.executable}\nimport sys\n{show}sys.stderr.write('llama.cpp log\\n')\n"
                    f"sys.exit({exit_code})\n")
    path.chmod(0o755)
    return path


def job_inputs(tmp_path, tools=("ggufbench-kvscore", "llama-tokenize")):
    from ggufbench.core.io import write_json
    from ggufbench.sources.manifest import write_manifest
    from tests.unit.measure.test_quality import tiny_gguf

    build = tmp_path / "build.json"
    write_json(build, {"build": "cpu", "key": "k1", "version": "0.5.0-dev", "commit": "0c1e570", "backend": "CPU",
                       "tools": list(tools)})
    gguf = tmp_path / "F16" / "smol-F16.gguf"
    gguf.parent.mkdir(parents=True)
    tiny_gguf(gguf, 10)
    manifest = tmp_path / "F16" / "manifest.json"
    write_manifest(manifest, "smol", "F16", [gguf], {"kind": "quantize"})
    corpus_json = tmp_path / "corpus.json"
    write_json(corpus_json, {"name": "pydocs", "sha256": "c0ffee", "source": {"python_docs": {}}})
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    tok = tmp_path / "bin/llama-tokenize"
    tok.parent.mkdir(parents=True, exist_ok=True)
    tok.write_text(f"#!{__import__('sys').executable}\nprint(list(range(91921)))\n")
    tok.chmod(0o755)
    return build, manifest, corpus, corpus_json


CELLS = dict(ctx=512, ref_kv="f16", kvs=("q8_0", "q4_0"), chunks=4, bins=(0, 128, 256), batch=512)


def test_the_job_writes_one_record_with_every_kv_type(tmp_path):
    from ggufbench.core.io import read_json
    from ggufbench.measure.kv_cost import KvCostCells, kv_cost_job
    from tests.support.jobs import make_job
    from tests.support.models import sha

    tool = stand_in(tmp_path / "bin/ggufbench-kvscore", KVSCORE / "smollm2_f16_ctx512.jsonl")
    build, manifest, corpus, corpus_json = job_inputs(tmp_path)
    out, log = tmp_path / "kv_cost.json", tmp_path / "kv_cost.log"
    job = make_job(tool=tool, build_json=build, run={"n_gpu_layers": None, "flash_attn": "on"}, out=out, log=log)
    rec = kv_cost_job(job, manifest=manifest, corpus=corpus, corpus_record=corpus_json, cells=KvCostCells(**CELLS))
    assert read_json(out)["stage"] == rec["stage"] == "kv_cost"
    assert rec["params"]["kvs"] == ["q8_0", "q4_0"] and rec["params"]["kv_pairs"]["q8_0"] == ["q8_0", "q8_0"]
    assert [c["kv"] for c in rec["result"]["cells"]] == ["q8_0", "q4_0"] and rec["result"]["n_chunks"] == 4
    cmd = rec["tool"]["cmd"]
    assert cmd[cmd.index("-c") + 1] == "512" and cmd[cmd.index("--ref") + 1] == "f16" and "-ngl" not in cmd
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--cell"] == ["q8_0", "q4_0"]
    assert cmd[cmd.index("--bins") + 1] == "0,128,256" and cmd[cmd.index("-fa") + 1] == "on"
    p = rec["provenance"]
    assert (p["quant"], p["file_sha256"], p["corpus"], p["build_key"]) == ("F16", sha(manifest), "pydocs", "k1")
    assert "llama.cpp log" in log.read_text() and "ggufbench-kvscore: 4 chunks of 512" in log.read_text()


@pytest.mark.faults
def test_a_scorer_that_stops_midway_leaves_no_record(tmp_path):
    from ggufbench.measure.kv_cost import KvCostCells, kv_cost_job
    from tests.support.jobs import make_job

    tool = stand_in(tmp_path / "bin/ggufbench-kvscore", KVSCORE / "smollm2_f16_ctx512.jsonl", lines=9)
    build, manifest, corpus, corpus_json = job_inputs(tmp_path)
    out = tmp_path / "kv_cost.json"
    job = make_job(tool=tool, build_json=build, run={"flash_attn": "on"}, out=out, log=tmp_path / "log")
    with pytest.raises(ToolFailed, match="ggufbench-kvscore did not finish"):
        kv_cost_job(job, manifest=manifest, corpus=corpus, corpus_record=corpus_json, cells=KvCostCells(**CELLS))
    assert not out.exists()


def test_a_build_without_the_scorer_is_refused_before_anything_runs(tmp_path):
    from ggufbench.measure.kv_cost import KvCostCells, kv_cost_job
    from tests.support.jobs import make_job

    build, manifest, corpus, corpus_json = job_inputs(tmp_path, tools=("llama-perplexity", "llama-tokenize"))
    out = tmp_path / "kv_cost.json"
    job = make_job(tool=tmp_path / "bin/ggufbench-kvscore", build_json=build, out=out, log=tmp_path / "log")
    with pytest.raises(ToolFailed, match="rebuild it: snakemake --forcerun build_llama_cpp"):
        kv_cost_job(job, manifest=manifest, corpus=corpus, corpus_record=corpus_json, cells=KvCostCells(**CELLS))
    assert not out.exists() and not (tmp_path / "log").exists()


def test_a_corpus_shorter_than_one_context_is_refused(tmp_path):
    from ggufbench.measure.kv_cost import KvCostCells, kv_cost_job
    from tests.support.jobs import make_job

    tool = stand_in(tmp_path / "bin/ggufbench-kvscore", KVSCORE / "smollm2_f16_ctx512.jsonl")
    build, manifest, corpus, corpus_json = job_inputs(tmp_path)
    job = make_job(tool=tool, build_json=build, run={"flash_attn": "on"}, out=tmp_path / "o.json",
                   log=tmp_path / "log")
    with pytest.raises(ToolFailed, match=r"the corpus has 91,921 tokens, at least one context of 131,072"):
        kv_cost_job(job, manifest=manifest, corpus=corpus, corpus_record=corpus_json,
                    cells=KvCostCells(**{**CELLS, "ctx": 131072}))


def test_the_base_files_floor_is_a_one_sided_tolerance():
    """llama-perplexity stores a reference log-probability below its row's floor (max logit - 16) as the floor: its
    KLD-mode PPL(base) can only come out low and its ln ratio high, by how much the data says; the scorer's PPL(base)
    is checked against the baseline pass's own instead, to its printed digits."""
    from ggufbench.measure.kv_cost import STORE_STEP, agreement_bounds

    lo, hi = agreement_bounds("ppl_base", 2046, 9.53)
    assert lo == pytest.approx(-(STORE_STEP / 2 * 9.53 + 5e-7)) and hi == math.inf
    lo, hi = agreement_bounds("ln_ppl_ratio", 2046, 0.0004)
    assert lo == -math.inf and hi == pytest.approx(STORE_STEP / 2 + 5e-7)
    assert agreement_bounds("ppl_base_pass", 2046, 9.53)[1] < 1e-4
    # a mean KLD over 1020 tokens: 5 standard deviations of the 16-bit rounding, half a printed digit, 0.1 %
    lo, hi = agreement_bounds("kld_mean", 1020, 0.0003)
    assert -lo == hi == pytest.approx(5 * STORE_STEP / math.sqrt(12) / math.sqrt(1020) + 5e-7 + 3e-7)


def test_a_table_rows_verdict_is_the_paired_verdict(score):
    from ggufbench.measure.kv_cost import row_verdict

    rec = {"result": kv_cost_result(score), "params": {}, "provenance": {}}
    for row, cell in zip(kv_cost_rows(rec), rec["result"]["cells"], strict=True):
        p = cell["second_half"]["paired_kld"]
        want = verdict(paired([c["kld"] for c in cell["chunks"]]), 0.001)
        assert row_verdict(row, 0.001) == want and want["low"] == pytest.approx(p["diff"] - p["half_width"])
    q8, q4 = (row_verdict(r, 0.001)["verdict"] for r in kv_cost_rows(rec))
    assert (q8, q4) == ("free", "costs")  # SmolLM2 F16 at 512: q8_0 KV 0.0003, q4_0 KV 0.05 mean KLD
