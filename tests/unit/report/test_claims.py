"""report.claims: the study's claims read off the llama-bench table, on the stored real tables (tests/data/report: the
CPU demo, the H200 demo) and on frames derived from them (the settings the study compares, with speeds and VRAM
set so that each verdict is known), and on the rows config/config.yaml's plan makes: the study config measures
every claim."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from ggufbench.core.config import validated
from ggufbench.measure.bench_calls import invocations, planned_rows
from ggufbench.report.claims import CLAIMS, VERDICTS, claims_section, evaluate, settings_table, verdict
from ggufbench.report.rows import present
from tests.support import REPO
from tests.support.report_pages import stored_tables

from .conftest import full_tables, study

CARD = {"report": {"target_gpu": {"name": "RTX 5080", "vram_gib": 16}}}


def q4(run: str) -> pd.DataFrame:
    b = stored_tables(run)["bench"]
    return b[(b["quant"] == "Q4_K_M") & (b["build"] == b["build"].iloc[0])].reset_index(drop=True)


def like(base: pd.DataFrame, speed: float = 1.0, samples: list[float] | None = None, **cols) -> pd.DataFrame:
    """base's rows as another setting (cols), their t/s times speed; samples: the relative repetitions (the first one
    the cold run, left out), replacing the row's own."""
    out = base.copy()
    for col, v in cols.items():
        out[col] = v
    rel = None if samples is None else pd.Series(samples[1:])
    for i, r in out.iterrows():
        med = r["median_ts"] * speed
        kept = [med] * 2 if rel is None else list(med * rel / rel.median())
        if rel is None:
            kept = [r["min_ts"] * speed, r["max_ts"] * speed]
        out.at[i, "median_ts"], out.at[i, "min_ts"], out.at[i, "max_ts"] = med, min(kept), max(kept)
        out.at[i, "samples_ts"] = json.dumps([kept[0] * 0.5, *kept])
    if "first_sample_discarded" in out:
        out["first_sample_discarded"] = True
    return out


def outcome(bench: pd.DataFrame, claim: str, config: dict | None = None) -> dict:
    found = evaluate(bench, config or CARD)
    return found[found["claim"] == claim].iloc[0].to_dict()


# The stored real tables ---------------------------------------------------------------------------------------

def test_a_cpu_run_says_which_claims_need_a_gpu_and_what_measures_the_others():
    found = evaluate(stored_tables("cpu-demo")["bench"], CARD)
    assert list(found["claim"]) == [c.key for c in CLAIMS] and set(found["quant"]) == {"Q4_K_M"}
    by = found.set_index("claim")["verdict"].to_dict()
    gpu = {c.key for c in CLAIMS if c.needs_gpu}
    assert {k for k, v in by.items() if v == "needs a GPU"} == gpu == {
        "c7-fits", "c7-fastest", "expert-offload", "q8_0-kv-vram", "b4096-fit"}
    # the demo measured one KV type, llama-bench's -b/-ub, mmap and one thread count: the notes say what would
    notes = found.set_index("claim")["note"]
    assert {k for k, v in by.items() if v == "not measured"} == {"q8_0-kv-faster", "b4096-prompt", "no-mmap", "threads"}
    assert "bench.kv: [f16, q8_0]" in notes["q8_0-kv-faster"] and "c7 and c7-mmap" in notes["no-mmap"]
    assert "1 thread count(s) measured" in notes["threads"]


def test_a_gpu_run_never_says_needs_a_gpu():
    found = evaluate(stored_tables("h200-demo")["bench"], CARD)
    assert set(found["build"]) == {"cuda", "cuda-fa-default"} and set(found["verdict"]) == {"not measured"}
    assert "bench.strategies.c7" in found.set_index("claim").loc["c7-fits"].iloc[0]["note"]


def test_every_verdict_is_one_of_five():
    for run in ("cpu-demo", "h200-demo"):
        assert set(evaluate(stored_tables(run)["bench"], CARD)["verdict"]) <= set(VERDICTS)
    assert verdict(1.2, 1.4, 1.1) == "holds" and verdict(0.9, 1.05, 1.1) == "does not hold"
    assert verdict(1.05, 1.2, 1.1) == "not resolved"


def test_settings_read_from_llama_bench_fields_of_either_version():
    s = settings_table(q4("cpu-demo"))
    assert set(s["offload"]) == {"cpu"} and set(s["test"]) == {"pp", "tg"}
    assert set(zip(s["batch"], s["ubatch"], s["no_mmap"], strict=True)) == {(2048, 512, False)}
    old = q4("cpu-demo").drop(columns="load_mode").assign(use_mmap=False)  # 4227c9b: use_mmap, no load_mode
    assert settings_table(old)["no_mmap"].all()
    assert settings_table(q4("cpu-demo").assign(load_mode="none"))["no_mmap"].all()
    g = settings_table(q4("h200-demo"))
    assert set(g["offload"]) == {"all"} and g["vram_mib"].notna().all()


# What a CPU run can check (derived from the CPU demo's rows) --------------------------------------------------

def test_q8_0_kv_faster_holds_when_the_whole_spread_clears_halfway_to_the_studys_20_percent():
    base = q4("cpu-demo")
    faster = pd.concat([base, like(base, 1.3, type_k="q8_0", type_v="q8_0")], ignore_index=True)
    o = outcome(faster, "q8_0-kv-faster")
    b = base[base["test"].str.startswith("tg")].iloc[0]
    assert o["verdict"] == "holds" and o["threshold"] == pytest.approx(1.1)
    assert o["ratio"] == pytest.approx(1.3) and o["lo"] == pytest.approx(1.3 * b["min_ts"] / b["max_ts"])
    assert "KV q8_0" in o["a_setting"] and "KV f16" in o["b_setting"] and o["a_setting"].endswith("2 threads")
    tight = like(base, 1.0, samples=[1, 1, 1.001, 0.999, 1])
    slower = pd.concat([tight, like(tight, 1.02, type_k="q8_0", type_v="q8_0")], ignore_index=True)
    assert outcome(slower, "q8_0-kv-faster")["verdict"] == "does not hold"  # 2% faster: not the study's ~20%
    noisy = pd.concat([base, like(base, 1.12, type_k="q8_0", type_v="q8_0")], ignore_index=True)
    assert outcome(noisy, "q8_0-kv-faster")["verdict"] == "not resolved"  # the demo's tg spread is ±15%


def test_b4096_prompt_speed_on_a_cpu():
    base = q4("cpu-demo")
    both = pd.concat([base, like(base, 1.25, n_batch=4096, n_ubatch=4096)], ignore_index=True)
    o = outcome(both, "b4096-prompt")
    assert o["verdict"] == "holds" and "-b 4096 -ub 4096" in o["a_setting"] and "-b" not in o["b_setting"]
    assert "t/s" in o["a_value"]


def test_no_mmap_consistency_needs_repetitions_to_resolve():
    base = q4("cpu-demo")
    two = pd.concat([like(base, samples=[1, 0.9, 1.1]), like(base, samples=[1, 0.97, 1.03], load_mode="none")],
                    ignore_index=True)
    o = outcome(two, "no-mmap")
    assert o["verdict"] == "not resolved" and o["ratio"] == pytest.approx(10 / 3, rel=1e-6)  # CV 3.3x, 2 each
    assert o["hi"] / o["ratio"] == pytest.approx(math.exp(1.96), rel=1e-6)
    wide = [1, 0.8, 1.2, 0.85, 1.15, 0.9, 1.1, 0.8, 1.2, 1.0, 1.0]
    narrow = [1, 0.98, 1.02, 0.985, 1.015, 0.99, 1.01, 0.98, 1.02, 1.0, 1.0]
    many = pd.concat([like(base, samples=wide), like(base, samples=narrow, load_mode="none")], ignore_index=True)
    o = outcome(many, "no-mmap")
    assert o["verdict"] == "holds" and o["a_value"].startswith("CV ") and "of 10 repetitions" in o["a_value"]
    same = pd.concat([like(base, samples=wide), like(base, samples=wide, load_mode="none")], ignore_index=True)
    assert outcome(same, "no-mmap")["verdict"] == "not resolved"


def _threads(base: pd.DataFrame, speeds: dict[int, float]) -> pd.DataFrame:
    tight = like(base, samples=[1, 0.99, 1.01])
    return pd.concat([like(tight, s, n_threads=t) for t, s in speeds.items()], ignore_index=True)


def test_the_thread_curve_u_shape():
    base = q4("cpu-demo")
    o = outcome(_threads(base, {1: 0.6, 2: 1.0, 3: 1.1, 4: 0.9}), "threads")
    assert o["verdict"] == "holds" and o["a_setting"].endswith("3 threads") and o["b_setting"].endswith("4 threads")
    assert "fastest at 3 of 1, 2, 3, 4 threads on AMD EPYC" in o["note"]
    assert outcome(_threads(base, {1: 0.5, 2: 0.8, 4: 1.0}), "threads")["verdict"] == "does not hold"  # rising


def test_a_side_measured_under_load_is_not_resolved():
    base = q4("cpu-demo")
    loaded = pd.concat([base.assign(loaded=False), like(base, 1.3, type_k="q8_0", type_v="q8_0", loaded=True)],
                       ignore_index=True)
    o = outcome(loaded, "q8_0-kv-faster")
    assert o["verdict"] == "not resolved" and "would be “holds”" in o["note"]


# What needs a GPU (derived from the H200 demo's rows) ----------------------------------------------------------

def gpu_rows(speed: float, vram: float, *, status: str = "measured", **setting) -> pd.DataFrame:
    """The H200 demo's Q4_K_M rows as one offload setting of a study run: llama-bench's own fields and the
    setting columns, VRAM peak and free memory as a 16 GiB card shows them."""
    base = q4("h200-demo")
    cols = {"n_cpu_moe": 0, "fit_target": 0, "tensor_buft_overrides": "none", "n_batch": 2048, "n_ubatch": 512,
            "load_mode": "auto", "setting_n_gpu_layers": None, "setting_context": 8192, "status": status,
            "vram_peak_delta_mib": vram, "vram_free_before_mib": 16000.0, **setting}
    out = like(base, speed, **cols)
    return out.assign(median_ts=float("nan")) if status != "measured" else out


C7_ROW = {"n_cpu_moe": 24, "n_batch": 4096, "n_ubatch": 4096, "type_k": "q8_0", "type_v": "q8_0", "load_mode": "none",
          "n_threads": 20}


def test_c7_fits_the_card_and_is_judged_against_it():
    c7 = gpu_rows(0.07, 14200.0, **C7_ROW)
    o = outcome(c7, "c7-fits")
    assert o["verdict"] == "holds" and o["ratio"] == pytest.approx(16384 / 14200)
    assert o["a_setting"] == "Q4_K_M -ncmoe 24 -b 4096 -ub 4096 KV q8_0 --no-mmap, 20 threads"
    assert "13.87 GiB peak" in o["a_value"] and "this machine's" in o["note"]
    assert outcome(gpu_rows(0.07, 17000.0, **C7_ROW), "c7-fits")["verdict"] == "does not hold"
    nofit = outcome(gpu_rows(0.07, float("nan"), status="does not fit", **C7_ROW), "c7-fits")
    assert nofit["verdict"] == "does not hold" and nofit["a_value"] == "does not fit"


def test_c7_is_the_fastest_that_fits_or_not():
    c7 = gpu_rows(0.07, 14200.0, **C7_ROW)
    slower_ncmoe = gpu_rows(0.05, 13000.0, n_cpu_moe=28, n_threads=16)
    too_big = gpu_rows(0.5, 30000.0)  # all layers on the GPU: faster, but not in 16 GiB
    o = outcome(pd.concat([c7, slower_ncmoe, too_big], ignore_index=True), "c7-fastest")
    assert o["verdict"] == "holds" and "-ncmoe 28" in o["b_setting"]
    beaten = gpu_rows(0.09, 15000.0, n_cpu_moe=20, n_threads=16)
    assert outcome(pd.concat([c7, beaten], ignore_index=True), "c7-fastest")["verdict"] == "does not hold"


def test_expert_offload_against_the_layer_split_at_the_same_budget():
    experts = gpu_rows(0.0775, 14800.0, n_cpu_moe=24, n_threads=16)   # ~70 t/s where the H200 demo ran ~903
    layers = pd.concat([gpu_rows(0.0239, 15200.0, setting_n_gpu_layers=28, n_gpu_layers=28, n_threads=16),
                        gpu_rows(0.06, 17500.0, setting_n_gpu_layers=34, n_gpu_layers=34, n_threads=16)],
                       ignore_index=True)  # -ngl 34 is faster but needs more than the card
    o = outcome(pd.concat([experts, layers], ignore_index=True), "expert-offload")
    assert o["verdict"] == "holds" and o["threshold"] == pytest.approx(1 + (70 / 21.6 - 1) / 2)
    assert "-ngl 28" in o["b_setting"] and o["ratio"] == pytest.approx(0.0775 / 0.0239)
    close = pd.concat([experts, gpu_rows(0.05, 15200.0, setting_n_gpu_layers=28, n_gpu_layers=28, n_threads=16)],
                      ignore_index=True)
    assert outcome(close, "expert-offload")["verdict"] == "does not hold"  # 1.55x: not the study's 3x


def test_q8_0_kv_uses_less_vram():
    f16 = gpu_rows(0.07, 15000.0, n_cpu_moe=24)
    q8 = gpu_rows(0.08, 14100.0, n_cpu_moe=24, type_k="q8_0", type_v="q8_0")
    o = outcome(pd.concat([f16, q8], ignore_index=True), "q8_0-kv-vram")
    assert o["verdict"] == "holds" and o["ratio"] == pytest.approx(15000 / 14100) and o["a_value"] == "14100 MiB"


@pytest.mark.parametrize(("vram", "status", "expected"), [(15500.0, "measured", "holds"),
                                                          (14000.0, "measured", "does not hold"),
                                                          (float("nan"), "does not fit", "holds")])
def test_b4096_against_the_fits_own_target(vram, status, expected):
    """--fit with a 1024 MiB margin and 16000 MiB free targets 14976 MiB: -b/-ub 4096 above it is what the fit did
    not account for; a call that then does not fit is the same finding."""
    fit = gpu_rows(0.05, 14900.0, fit_target=1024, n_gpu_layers=-1)
    big = gpu_rows(0.05, vram, status=status, fit_target=1024, n_gpu_layers=-1, n_batch=4096, n_ubatch=4096)
    o = outcome(pd.concat([fit, big], ignore_index=True), "b4096-fit")
    assert o["verdict"] == expected and o["b_value"] == "14900 of 14976 MiB"


# The study's plan measures every claim ---------------------------------------------------------------------------

def _planned_table(config: dict) -> pd.DataFrame:
    """The rows the study's bench plan makes for Q4_K_M on a CUDA build, as aggregate tables them (llama-bench's
    fields and the setting columns), with made-up speeds and VRAM that fit: every claim then has both sides."""
    bench, run = config["bench"], config["run"]
    rows = []
    for name, spec in bench["strategies"].items():
        for inv in invocations(bench, name, spec):
            for r in planned_rows(bench, inv, bench["threads"], True, run):
                pp = r["n_prompt"] > 0
                rows.append({**r, "build": "cuda", "model": "qwen", "quant": "Q4_K_M", "backend": "CUDA",
                             "status": "measured", "median_ts": 500.0 if pp else 50.0, "min_ts": 490.0 if pp else 49.0,
                             "max_ts": 510.0 if pp else 51.0, "samples_ts": json.dumps([40.0, 49.0, 50.0, 51.0]),
                             "first_sample_discarded": True, "vram_available": True, "vram_peak_delta_mib": 14000.0,
                             "vram_free_before_mib": 16000.0, "setting_no_mmap": inv.get("no_mmap", False),
                             "setting_n_gpu_layers": inv.get("n_gpu_layers"),
                             "setting_context": inv["context"], "n_batch": inv["batch"] or 2048,
                             "n_ubatch": inv["ubatch"] or 512})
    return pd.DataFrame(rows)


def test_the_study_config_measures_every_claim():
    config = validated(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    found = evaluate(_planned_table(config), config)
    assert set(found["context"]) == {8192, 32768}
    assert not (found["verdict"].isin(["not measured", "needs a GPU"])).any(), found[["claim", "note"]].to_string()
    c7 = found[found["claim"] == "c7-fits"].iloc[0]
    assert c7["a_setting"] == "Q4_K_M -ncmoe 24 -b 4096 -ub 4096 KV q8_0 --no-mmap, 20 threads"


# The section ----------------------------------------------------------------------------------------------------

def test_the_section_of_the_cpu_demo():
    html = claims_section(full_tables("cpu-demo"), CARD)
    assert html.count("<table") == 1 and 'id="claims-cpu-smollm2-135m-1024"' in html
    assert html.count("<td>needs a GPU</td>") == 5 and html.count("<td>not measured</td>") == 4
    assert "Speeds are the measuring machine's" in html and "Ollama itself is not run" in html
    assert "AMD EPYC" in html and "16 GiB" in html and "“q8_0 KV is ~20% faster …”" in html


def test_the_section_without_bench_rows_says_what_measures_them():
    html = claims_section({"bench": pd.DataFrame()}, CARD)
    assert "No llama-bench results in this run" in html and "config/config.yaml" in html


def test_a_claim_that_holds_is_marked():
    base = q4("cpu-demo")
    faster = pd.concat([base, like(base, 1.3, type_k="q8_0", type_v="q8_0")], ignore_index=True)
    html = claims_section({"bench": faster}, CARD)
    assert '<tr class="pick"><td>“q8_0 KV is ~20% faster …”</td>' in html
    assert '<td class="num">1.30 (' in html


STUDIES = ("one quant, PPL only", "one quant, KLD of its KV types", "one quant, one KV type", "PPL only", "speed only",
           "no bench results", "two models, one without KLD", "one ctx", "one KV type", "no f16 KV", "nothing fits",
           "no VRAM", "nothing at all", "tables with columns, no rows")


@pytest.mark.parametrize("run", ["cpu-demo", "h200-demo"])
@pytest.mark.parametrize("case", STUDIES)
def test_every_small_study_renders_the_section(case, run):
    """The small and degenerate studies of issue 25 (conftest.study): a table per build, model and context, or the
    sentence that says what measures the claims; never an error."""
    tables, config = study(case, run)
    html = claims_section(tables, config)
    has_rows = present(tables["bench"], "build", "model", "quant", "median_ts")
    assert ("<table" in html) == has_rows and ("No llama-bench results in this run" in html) != has_rows
    if case == "nothing fits" and run == "h200-demo":  # every call out of memory: nothing to compare, on a GPU
        assert "<td>needs a GPU</td>" not in html
