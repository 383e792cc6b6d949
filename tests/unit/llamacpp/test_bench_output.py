"""Parsers over real captured llama.cpp output: llama-perplexity (PPL and KLD mode), llama-bench, --version."""

from __future__ import annotations

import json
import statistics

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp import bench_output as bench
from ggufbench.llamacpp.bench_output import parse_bench_jsonl, summarize
from ggufbench.llamacpp.bench_output import test_label as label
from tests.support import DATA


def test_parse_bench_jsonl_real(capture):
    rows = bench.parse_bench_jsonl(capture("bench_q8_0.jsonl"))
    assert [r["test"] for r in rows] == ["pp512", "tg128"]
    pp, tg = rows
    assert pp["avg_ts"] == 1019.409153 and pp["stddev_ts"] == 11.322856
    assert tg["avg_ts"] == 185.402368 and tg["stddev_ts"] == 7.634218
    assert pp["samples_ts"] == [1012.45, 1013.3, 1032.47]
    assert pp["median_ts"] == 1013.3
    assert (pp["min_ts"], pp["max_ts"]) == (1012.45, 1032.47)
    assert tg["median_ts"] == 188.797
    assert tg["median_ts"] == statistics.median(tg["samples_ts"])
    assert (tg["min_ts"], tg["max_ts"]) == (176.66, 190.751)


def test_parse_bench_jsonl_keeps_every_field(capture):
    text = capture("bench_q8_0.jsonl")
    raw = [json.loads(line) for line in text.splitlines()]
    rows = bench.parse_bench_jsonl(text)
    for r, orig in zip(rows, raw, strict=True):
        for k, v in orig.items():
            assert r[k] == (bench.flash_attn_label(v) if k == "flash_attn" else v), k  # one type across versions
        assert set(r) - set(orig) == {"test", "median_ts", "min_ts", "max_ts"}
    pp = rows[0]
    assert pp["build_commit"] == "0c1e570"
    assert pp["type_k"] == "f16" and pp["type_v"] == "f16"
    assert pp["n_cpu_moe"] == 0
    assert pp["model_type"] == "llama 256M Q8_0"
    assert pp["n_threads"] == 2
    assert pp["flash_attn"] == "auto"  # -1 as llama-bench writes it


def test_test_label():
    assert bench.test_label({"n_prompt": 512, "n_gen": 0}) == "pp512"
    assert bench.test_label({"n_prompt": 0, "n_gen": 128}) == "tg128"
    assert bench.test_label({"n_prompt": 512, "n_gen": 128}) == "pp512+tg128"
    assert bench.test_label({"n_prompt": 512, "n_gen": 0, "n_depth": 4096}) == "pp512 @ d4096"
    assert bench.test_label({"n_prompt": 0, "n_gen": 128, "n_depth": 0}) == "tg128"


def test_test_label_of_real_rows(capture):
    raw = [json.loads(line) for line in capture("bench_q8_0.jsonl").splitlines()]
    assert [bench.test_label(r) for r in raw] == ["pp512", "tg128"]


def test_bench_markdown_output_is_refused():
    # what llama-bench prints by default (-o md), e.g. when -o jsonl was dropped from the command
    md = ("| model | size | params | backend | threads | test | t/s |\n"
          "| --- | ---: | ---: | --- | ---: | ---: | ---: |\n")
    with pytest.raises(ToolFailed) as ei:
        bench.parse_bench_jsonl(md)
    msg = str(ei.value)
    assert "-o jsonl" in msg
    assert "line 1" in msg
    assert "| model | size |" in msg


def test_bench_json_array_output_is_refused(capture):
    # -o json: one pretty-printed array, not one object per line
    rows = [json.loads(line) for line in capture("bench_q8_0.jsonl").splitlines()]
    with pytest.raises(ToolFailed, match="-o jsonl"):
        bench.parse_bench_jsonl(json.dumps(rows, indent=2))


def test_bench_empty_output(capture):
    # bench_fail.jsonl is the (empty) stdout of the real failed run; its stderr said why
    assert capture("bench_fail.jsonl") == ""
    assert "failed to load model" in capture("bench_fail.stderr")
    with pytest.raises(ToolFailed, match="no result rows"):
        bench.parse_bench_jsonl(capture("bench_fail.jsonl"))
    with pytest.raises(ToolFailed, match="no result rows"):
        bench.parse_bench_jsonl("\n  \n")


def test_bench_row_without_required_field(capture):
    row = json.loads(capture("bench_q8_0.jsonl").splitlines()[0])
    del row["avg_ts"]
    with pytest.raises(ToolFailed, match="lacks avg_ts"):
        bench.parse_bench_jsonl(json.dumps(row))


def test_bench_zero_rate_is_no_measurement(capture):
    row = json.loads(capture("bench_q8_0.jsonl").splitlines()[1])
    row["avg_ts"] = 0
    with pytest.raises(ToolFailed, match="tg128"):
        bench.parse_bench_jsonl(json.dumps(row))


def test_bench_non_object_line():
    with pytest.raises(ToolFailed, match="not a JSON object"):
        bench.parse_bench_jsonl("[1, 2]\n")


DATA = DATA


def _rows(name: str) -> list[dict]:
    text = (DATA / name).read_text()
    return parse_bench_jsonl("\n".join(ln for ln in text.splitlines() if ln.startswith("{")))


def test_summary_leaves_out_the_cold_repetition():
    """The H200's pp512 of Q8_0: 19794, 56162, 57274 t/s — the first repetition ran cold."""
    rows = _rows("cuda-h200/bench_q8_0.log")
    pp = summarize(rows[0], discard_first=True, noise_pct=5.0)
    assert pp["samples_ts"] == [19794.1, 56161.6, 57274.4]
    assert (pp["min_ts"], pp["max_ts"], pp["n_samples_kept"]) == (56161.6, 57274.4, 2)
    assert pp["first_sample_discarded"] and not pp["noisy"]  # 2.0% range
    cold = summarize(rows[0], discard_first=False, noise_pct=5.0)
    assert cold["noisy"] and cold["spread_pct"] > 60


def test_labels_of_the_cpu_capture():
    rows = _rows("cpu-0.3.36/bench_q8_0.jsonl")
    assert [label(r) for r in rows] == ["pp512", "tg128"]
    assert label({"n_prompt": 0, "n_gen": 32, "n_depth": 8160}) == "tg32 @ d8160"


def test_summary_keeps_the_calls_load_and_its_noise_flag_stays_about_the_spread():
    """A call slowed alike in every repetition by a CPU hog is not noisy; its `load` and `loaded` (measure.load)
    stay on the row when the report summarises the repetitions again (report.tables.bench_rows)."""
    tg = _rows("cpu-0.3.36/bench_q8_0.jsonl")[1]
    load = {"available": True, "other_cpu_share": 0.48, "n_cpus": 2, "loadavg_max": 3.1}
    slowed = {**tg, "samples_ts": [x / 15 for x in tg["samples_ts"]], "load": load, "loaded": True}
    row = summarize(slowed, discard_first=True, noise_pct=10.0)
    assert (row["load"], row["loaded"]) == (load, True)
    assert not row["noisy"] and row["spread_pct"] < 10 and row["median_ts"] < tg["median_ts"] / 10  # slow, steady
