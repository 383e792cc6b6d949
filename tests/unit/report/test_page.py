"""The report and its figures from real tables (tests/data/report/: the CPU demo and the H200 run of two CUDA
builds): what each section says, the picks per VRAM budget, and pages with parts missing: every small or degenerate
study the schema accepts (one quant, PPL only, speed only, one context or KV type, nothing that fits) renders and
says what it did not measure (issue 25)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufbench.report import figures as F
from ggufbench.report import page as R
from ggufbench.report.rows import present
from ggufbench.report.tables import write_table
from tests.support.report_pages import REPO, RUNS, config_for, stored_tables
from tests.unit.report.conftest import TABLES, full_tables, keep, no_table, study, two_models, without


def test_cpu_page_says_what_it_lacks(cpu_page):
    page, _ = cpu_page
    for table_id in ("scoreboard-cpu-smollm2-135m", "kv-cpu-smollm2-135m", "kv-kld-cpu-smollm2-135m", "speed",
                     "ladder-smollm2-135m", "builds", "files", "hardware", "corpora"):
        assert f'id="{table_id}"' in page, table_id
    assert "No VRAM measured in this run: no GPU: NVML unavailable" in page
    assert "One llama.cpp build in this run: nothing to compare" in page
    assert "No VRAM budget in the config" in page
    assert "file size (lower bound)" in page
    # the scoreboard's ΔPPL is KLD mode's own, with its correlated ± (CPU run, Q4_K_M against F16)
    assert "<td>Q4_K_M</td><td class=\"num\">0.098</td><td class=\"num\">12.9260 ± 0.7872</td>" \
           "<td class=\"num\">1.1269 ± 0.1307</td><td class=\"num\">0.060838 ± 0.001527</td>" in page
    # provenance: commit, flags, corpus sha256, every file's sha256
    t = stored_tables("cpu-demo")
    assert t["builds"]["llama_cpp_commit"].iloc[0] in page and "-DGGML_NATIVE=ON" in page
    assert t["perplexity"]["corpus_sha256"].iloc[0] in page
    for sha in t["perplexity"]["file_sha256"].unique():
        assert sha in page


def test_page_with_no_results_still_renders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("perplexity", "kld", "bench", "builds"):
        write_table(pd.DataFrame(), empty / f"{name}.parquet", name)  # as the aggregate writes an empty table
    figs = {k: tmp_path / "figures" / f"{k}.png" for k in F.FIGURES}
    F.make_figures({t: empty / f"{t}.parquet" for t in ("perplexity", "kld", "bench")}, figs)
    out = tmp_path / "summary.html"
    R.write_report(sorted(empty.glob("*.parquet")), list(figs.values()), out, "empty", {"models": {}})
    page = out.read_text()
    assert "No results to recommend from in this run" in page
    assert "No perplexity or KLD results in this run" in page and "No llama-bench results in this run" in page
    assert page.count("data:image/png;base64,") == len(F.FIGURES)


def test_kld_without_perplexity_and_bench_only(tmp_path):
    t = stored_tables("h200-demo")
    only_bench = {"perplexity": pd.DataFrame(), "kld": pd.DataFrame(), "bench": t["bench"], "builds": t["builds"]}
    html = R.render(only_bench, [], "x", config_for("h200-demo", vram_budgets_gib=[1.0]))
    assert "No perplexity or KLD results in this run" in html
    assert 'id="recommendations-smollm2-135m"' in html  # picks by speed alone
    assert set(RUNS) == {"cpu-demo", "h200-demo"}


def test_provenance_says_all_chunks_for_the_whole_corpus():
    """The study's shape: ctx 512 on 25 chunks, ctx 8192 on the whole corpus (a null: NaN in a float column)."""
    t = stored_tables("cpu-demo")
    p = t["perplexity"]
    t["perplexity"] = p.assign(chunks=[25.0 if c == 512 else float("nan") for c in p["ctx"]])
    text = R.provenance_block(t)
    assert "ctx 512: --chunks 25," in text and "ctx 1024: --chunks all," in text
    assert "nan" not in text and "25.0" not in text


def test_a_setting_that_does_not_fit_is_a_row_of_its_own_in_the_speed_table():
    import json

    from ggufbench.report.tables import bench_rows

    folder = REPO / "tests/data/cuda-h200-study/bench"
    bench = bench_rows([json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))])
    nofit = bench[bench["status"] == "does not fit"]
    assert set(nofit["strategy"]) == {"all-gpu"} and nofit["median_ts"].isna().all()
    assert nofit["reason"].str.startswith("cudaMalloc of 19905.15 MiB on device 0 failed").all()
    assert (bench["gpu_emulated_free_mib"] == 16384).all()
    page = R.speed_table(bench)
    row = re.search(r'<tr class="nofit">(.*?)</tr>', page).group(1)
    assert row.count("does not fit in 16.0 GiB") == 3  # pp512, tg32 and the VRAM column
    assert "Emulated card: the GPU showed only 16 GiB free" in page
    # the settings that fit were measured all the same, each with its own peak
    measured = bench[bench["status"] == "measured"]
    assert (measured["vram_peak_delta_mib"] < 16384).all()
    assert sorted(measured["setting_n_cpu_moe"].dropna().unique()) == [16, 24, 32]


@pytest.mark.faults
def test_speeds_measured_on_a_loaded_machine_say_so_in_the_table_and_the_figure(tmp_path):
    """Issue 25: tg128 93 -> 6.1 t/s under load was reported clean. A bench record as bench_job writes it (the
    stored H200 run's), its calls' load as measure/load.py records it: a loaded call's row says LOADED with the
    share, the table says how many, the figure draws it hollow; records made before load sampling say so."""
    import json

    from ggufbench.report.tables import bench_rows

    folder = REPO / "tests/data/cuda-h200-study/bench"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert "not measured" in R.speed_table(bench_rows(records))  # old records: no load columns
    busy = {"available": True, "reason": "", "n_cpus": 16, "other_cpu_share": 0.85, "loadavg_max": 31.0}
    for r in records:
        for row in r["result"]["rows"]:
            row.update(load=busy if r["params"]["strategy"] == "exps-cpu" else {**busy, "other_cpu_share": 0.02},
                       loaded=r["params"]["strategy"] == "exps-cpu")
    bench = bench_rows(records)
    page = R.speed_table(bench)
    n = page.count("LOADED: others took 85%")  # the exps-cpu settings (one per served context)
    assert n >= 1 and "clean (2%)" in page and page.count('<tr class="loaded">') == n
    assert f"{n} of " in page and "more than 10% of the CPUs" in page
    F.speed(bench, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").stat().st_size > 0


def test_the_paired_section_on_real_kld_runs(capture):
    """Q8_0 and Q2_K of SmolLM2-135M on the same 12 chunks (real llama-perplexity output): one neighbouring pair,
    resolved, with its paired ± beside the quadrature of the printed ±."""
    from ggufbench.llamacpp.perplexity_output import parse_kld

    chunks, rows = [], []
    for name, quant in (("kld_q8_0.txt", "Q8_0"), ("kld_q2_k.txt", "Q2_K")):
        r = parse_kld(capture(name))
        key = {"build": "cpu", "model": "smollm2-135m", "ctx": 512, "kv": "f16", "quant": quant}
        chunks += [{"stage": "kld", **key, **c} for c in r.chunks]
        rows.append({**key, **r.flat()})
    html = R.paired_section({"chunks": pd.DataFrame(chunks), "kld": pd.DataFrame(rows)})
    assert 'id="paired-quant"' in html and "<td>Q8_0</td><td>Q2_K</td>" in html and "Q8_0 better" in html
    assert "−0.41223" in html or "-0.41223" in html
    empty = R.paired_section({"chunks": pd.DataFrame(), "kld": pd.DataFrame(rows)})
    assert "No per-chunk KLD results in this run" in empty


# ------------------------------------------------------------------------------------------ small studies (issue 25)

# study (tests/unit/report/conftest.py) -> what its page must say it lacks
SAYS = {
    "one quant, PPL only": ["No KLD results for smollm2-135m in this run: the KLD, Δp and same-top-p columns need kld: "
                            "in the config", "No other quant of smollm2-135m in this run",
                            "No KLD results in this run: paired comparisons"],
    "one quant, KLD of its KV types": ["No KLD results for smollm2-135m in this run: KLD was measured only for F16 "
                                       "with other KV types"],
    "one quant, one KV type": ["kld: measures each quant against the baseline (F16), and F16 is the only one; add "
                               "quants under models.smollm2-135m.quants",
                               "No second KV type for smollm2-135m in this run"],
    "PPL only": ["No KLD results for smollm2-135m in this run: the KLD, Δp and same-top-p columns need kld:"],
    "speed only": ["No quality results in this run: the picks are by speed alone",
                   "Pick: the fastest at generation (tg median) whose memory need",
                   "No perplexity or KLD results in this run", "No perplexity results in this run: the KV-cache"],
    "no bench results": ["No llama-bench results in this run: the picks are by quality alone",
                         "No llama-bench results in this run: speed and VRAM"],
    "KLD only of the baseline's KV types": ["KLD was measured only for F16 with other KV types"],
    "two models, one without KLD": ["No KLD results for other in this run: the tables hold no KLD rows of its quants",
                                    "mean KLD against the baseline where measured, else perplexity"],
    "one ctx": ["No second context for smollm2-135m in this run: only ctx 512"],
    "one KV type": ["No second KV type for smollm2-135m in this run: only KV f16"],
    "no f16 KV": ["No f16-KV cells for smollm2-135m in this run"],
    "nothing fits": ["No llama-bench setting that fit in this run: all",
                     "every llama-bench call ran out of device memory"],
    "no VRAM": ["No VRAM measured in this run: "],
    "KLD without PPL": ["No perplexity results in this run: the scoreboard needs the PPL cells",
                        "No perplexity results in this run: the picks are by speed alone"],
    "nothing at all": ["No results to recommend from", "No perplexity or KLD results", "No llama-bench results",
                       "No build records"],
    "tables with columns, no rows": ["No results to recommend from", "No perplexity or KLD results",
                                     "No llama-bench results"],
}


def sections(html: str) -> dict[str, str]:
    """Each section's id and its content."""
    return dict(re.findall(r'<section id="([^"]+)"><h2>.*?</h2>(.*?)</section>', html, re.S))


def says_something(html: str) -> list[str]:
    """The sections that show neither a table, a figure nor a sentence about what is missing (none should)."""
    return [sid for sid, body in sections(html).items()
            if not re.search(r'<table |<figure |<p class="(empty|note)">', body)]


@pytest.mark.parametrize("run", ["cpu-demo", "h200-demo"])
@pytest.mark.parametrize("case", list(SAYS))
def test_a_small_study_renders_and_says_what_it_lacks(case, run):
    tables, config = study(case, run)
    html = R.render(tables, [], "x", config)
    text = html.replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    for phrase in SAYS[case]:
        assert phrase in re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text)), (case, phrase)
    assert says_something(html) == []


def test_a_one_quant_scoreboard_has_no_empty_kld_columns():
    """Without KLD rows a model's scoreboard shows what was measured (PPL ±), not five columns of dashes."""
    tables, config = study("one quant, PPL only")
    html = R.scoreboard(tables["perplexity"], tables["kld"], config)
    head = re.search(r'<table id="scoreboard-cpu-smollm2-135m"><thead><tr>(.*?)</tr>', html).group(1)
    assert re.findall(r"<th>(.*?)</th>", head) == ["quant", "size GiB", "PPL", "ΔPPL"]
    assert "<td>F16 (baseline)</td>" in html and "0 (baseline)" in html
    both, _ = two_models(*study("PPL only"))
    assert "KLD" not in re.search(r'<table id="scoreboard-cpu-other">.*?</thead>', R.scoreboard(
        both["perplexity"], stored_tables("cpu-demo")["kld"], config_for("cpu-demo")), re.S).group(0)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.fixed_dictionaries({name: st.sampled_from(["kept", "none", "no rows"]) for name in TABLES}),
       quant=st.sampled_from([None, "F16", "Q4_K_M"]), ctx=st.sampled_from([None, 512, 1024]),
       kv=st.sampled_from([None, "f16", "q8_0"]), kld_in_config=st.booleans(),
       bench=st.sampled_from([None, "nothing fits", "no VRAM"]))
def test_any_part_of_a_study_missing_still_renders(shape, quant, ctx, kv, kld_in_config, bench):
    """The class test: any table missing (empty, with or without columns), the rest cut to one quant, one context,
    one KV type, nothing fitting or no VRAM. The page renders, and every section shows something or says why not."""
    tables, config = study(bench) if bench else (full_tables("cpu-demo"), config_for("cpu-demo"))
    where = {k: (lambda s, v=v: s == v) for k, v in (("quant", quant), ("ctx", ctx), ("kv", kv)) if v is not None}
    tables = keep(tables, **where)
    for mode in ("none", "no rows"):
        tables = no_table(tables, *[n for n, s in shape.items() if s == mode], columns=mode == "no rows")
    if not kld_in_config:
        config = without(config, "kld")
    html = R.render(tables, [], "x", config)
    assert says_something(html) == []
    if not present(tables["bench"]):
        assert "No llama-bench results in this run" in html
    if not present(tables["perplexity"]):
        assert "No perplexity" in html
    elif not present(tables["kld"]):
        assert "No KLD results for smollm2-135m in this run" in html


@pytest.mark.parametrize(("case", "columns"), [("speed only", {"KLD", "KLD 99.9%", "PPL"}),
                                               ("one quant, PPL only", {"KLD", "KLD 99.9%"}),
                                               ("PPL only", {"KLD", "KLD 99.9%"}), ("one ctx", set())])
def test_picks_show_the_quality_that_was_measured(case, columns):
    """The picks and the ladder leave out a quality column no candidate has, rather than a column of dashes."""
    tables, config = study(case)
    html = R.recommendations(tables, config)
    for table_id in ("recommendations-smollm2-135m", "ladder-smollm2-135m"):
        head = re.search(rf'<table id="{table_id}"><thead><tr>(.*?)</tr>', html).group(1)
        assert {"KLD", "KLD 99.9%", "PPL"} - set(re.findall(r"<th>(.*?)</th>", head)) == columns, table_id


def test_the_tasks_section_puts_accuracy_and_flips_beside_kld(demo_tasks):
    html = R.tasks_section(demo_tasks)
    assert "task set <code>cloze</code> (cloze, 926" in html and "chance 33.3 %" in html
    assert "44 / 60" in html and "11.2 % [9.4, 13.4]" in html  # Q2_K: right→wrong / wrong→right, its flip rate
    assert "+1.7 pt (p = 0.14)" in html and "0.428934 ± 0.008300" in html
    assert "Noise floor: 0 of 926 answers changed when the baseline was scored again with -b 512 -ub 64" in html
    assert "telling 2% from 4% needs about 1,084 questions" in html
    assert "No task results in this run" in R.tasks_section(pd.DataFrame())


def test_kv_differences_carry_their_noise_and_a_verdict():
    """Issue 26: the KV matrix's ΔPPL against f16 and the long-minus-short table had no ± and no verdict; a ±0.03
    difference read like a result. On the stored CPU demo (no per-chunk table: the two PPLs' ± in quadrature),
    every difference is within its noise and says so."""
    tables = stored_tables("cpu-demo")
    html = R.kv_matrix(tables["perplexity"], tables["kld"])
    long = html[html.index('id="kv-long-'):]
    long = long[:long.index("</table>")]
    assert " ± " in long and long.count("<td>not resolved</td>") == 12  # 6 quants x q8_0, q4_0
    assert "within noise" in html


def test_kld_at_several_contexts_gets_a_scoreboard_each_and_a_column_per_context():
    """kld.ctx a list (issue 26): a scoreboard per context KLD was measured at (PPL cells there), never a KLD row of
    one context beside PPL of another; the KV table's KLD has a column per context and KV type."""
    tables = stored_tables("cpu-demo")
    kld, ppl = tables["kld"], tables["perplexity"]
    longer = kld.assign(ctx=1024, kld_mean=kld["kld_mean"] * 2)
    both = {**tables, "kld": pd.concat([kld, longer], ignore_index=True)}
    html = R.scoreboard(ppl, both["kld"], config_for("cpu-demo"))
    assert 'id="scoreboard-cpu-smollm2-135m-ctx512"' in html and 'id="scoreboard-cpu-smollm2-135m-ctx1024"' in html
    board = html[html.index('id="scoreboard-cpu-smollm2-135m-ctx1024"'):]
    board = board[:board.index("</table>")]
    q2 = longer[(longer["quant"] == "Q2_K") & (longer["kv"] == "f16")]["kld_mean"].iloc[0]
    assert f"{q2:.6f}" in board  # the ctx-1024 KLD on the ctx-1024 board
    kv = R.kv_matrix(ppl, both["kld"])
    assert "ctx 512 · KV q8_0" in kv and "ctx 1024 · KV q8_0" in kv
