"""measure.bench_calls: a strategy's llama-bench calls (one per offload setting, KV, -b/-ub, context; a strategy's own
KV types, -b/-ub, threads and no_mmap) and the rows a call that does not fit stands for."""

from __future__ import annotations

import yaml

from ggufbench.core.config import defaults, validated
from ggufbench.measure.bench_calls import invocations, planned_rows, strategy_settings
from tests.support import REPO


def test_n_cpu_moe_list_is_one_call_per_n_and_kv():
    bench = {"kv": ["f16", "q8_0"], "batch": None, "ubatch": [512]}
    calls = invocations(bench, "n-cpu-moe", {"n_cpu_moe": [16, 24]})
    assert [(c["n_cpu_moe"], c["kv"], c["ubatch"]) for c in calls] == [
        (16, "f16", 512), (16, "q8_0", 512), (24, "f16", 512), (24, "q8_0", 512)]
    assert all(c["strategy"] == "n-cpu-moe" and c["batch"] is None for c in calls)


def test_each_served_context_is_a_call_of_its_own():
    bench = {**defaults("bench"), "contexts": [8192, 32768]}
    calls = invocations(bench, "fit-256", {"fit_target": 256})
    assert [(c["fit_target"], c["context"]) for c in calls] == [(256, 8192), (256, 32768)]


def test_strategy_settings_keep_only_what_the_strategy_sets():
    assert strategy_settings("exps-cpu", {"override_tensor": "exps=CPU", "fit_target": None}) == [
        {"strategy": "exps-cpu", "override_tensor": "exps=CPU"}]
    assert strategy_settings("ncmoe", {"n_cpu_moe": 8}) == [{"strategy": "ncmoe", "n_cpu_moe": 8}]


def test_planned_rows_name_the_setting_as_llama_bench_reports_it():
    """A call that does not fit writes these rows: llama-bench's own field values (-ngl -1 under fit, "none"
    without -ot), one per test and thread count, at the depth that fills the served context."""
    bench = {**defaults("bench"), "prompt": [512], "gen": [128]}
    inv = {"strategy": "fit-256", "fit_target": 256, "kv": "q8_0", "batch": None, "ubatch": None, "context": 8192}
    rows = planned_rows(bench, inv, [8, 16], True, defaults("run"))
    assert [(r["test"], r["n_threads"], r["n_depth"]) for r in rows] == [
        ("pp512 @ d7680", 8, 7680), ("tg128 @ d7680", 8, 7680), ("pp512 @ d7680", 16, 7680),
        ("tg128 @ d7680", 16, 7680)]
    r = rows[0]
    assert (r["n_gpu_layers"], r["fit_target"], r["tensor_buft_overrides"], r["type_k"], r["backends"]) == (
        -1, 256, "none", "q8_0", "CUDA")
    cpu = planned_rows(bench, {"strategy": "all-gpu", "kv": "f16"}, [2], False, defaults("run"))
    assert {r["n_gpu_layers"] for r in cpu} == {-1} and {r["backends"] for r in cpu} == {"CPU"}


def test_n_gpu_layers_list_is_one_call_per_value():
    """A layer split (Ollama's way: whole layers on the CPU) sweeps -ngl like -ncmoe: each value its own call and
    VRAM peak."""
    calls = invocations({"kv": ["f16", "q8_0"]}, "layer-split", {"n_gpu_layers": [16, 28], "kv": ["f16"]})
    assert [(c["n_gpu_layers"], c["kv"]) for c in calls] == [(16, "f16"), (28, "f16")]
    assert strategy_settings("one", {"n_gpu_layers": 20}) == [{"strategy": "one", "n_gpu_layers": 20}]


def test_a_strategy_sets_its_own_kv_batch_ubatch_threads_and_no_mmap():
    """The study's C7 as config/config.yaml writes it: one setting, its own KV type, -b/-ub and 20 threads, without
    mmap; a call per served context. The bench section's lists stand for the strategies that set none."""
    config = validated(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    bench = config["bench"]
    c7 = invocations(bench, "c7", bench["strategies"]["c7"])
    assert c7 == [{"strategy": "c7", "no_mmap": True, "n_cpu_moe": 24, "kv": "q8_0", "batch": 4096, "ubatch": 4096,
                   "context": ctx, "threads": [20]} for ctx in (8192, 32768)]
    twin = invocations(bench, "c7-mmap", bench["strategies"]["c7-mmap"])
    assert [{k: v for k, v in c.items() if k != "strategy"} for c in twin] == [
        {k: v for k, v in c.items() if k not in ("strategy", "no_mmap")} for c in c7]
    # the schema fills in no per-strategy key: a strategy's spec (its jobs' params) is as written, so the strategies
    # measured before these keys existed are not measured again
    assert bench["strategies"]["n-cpu-moe"] == {"n_cpu_moe": [16, 20, 24, 28, 32]}
    plain = invocations(bench, "n-cpu-moe", bench["strategies"]["n-cpu-moe"])
    assert len(plain) == 5 * 2 * 2 and {c["kv"] for c in plain} == {"f16", "q8_0"}
    assert all(set(c) == {"strategy", "n_cpu_moe", "kv", "batch", "ubatch", "context"} for c in plain)
    assert {(c["batch"], c["ubatch"]) for c in plain} == {(None, None)}  # llama-bench's own -b/-ub


def test_planned_rows_of_a_strategy_with_its_own_threads():
    bench = {**defaults("bench"), "prompt": [512], "gen": [128]}
    inv = {"strategy": "c7", "n_cpu_moe": 24, "kv": "q8_0", "batch": 4096, "ubatch": 4096, "context": None,
           "threads": [20], "no_mmap": True}
    rows = planned_rows(bench, inv, [6, 8], True, defaults("run"))
    assert {r["n_threads"] for r in rows} == {20} and {(r["n_batch"], r["n_ubatch"]) for r in rows} == {(4096, 4096)}


def test_the_study_plan_in_calls():
    """config/config.yaml's llama-bench calls per quant: 36 before issue 28, 64 with C7, its mmap twin, the layer
    split and the -b/-ub 4096 twins of the n-cpu-moe and fit settings."""
    bench = validated(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))["bench"]
    per = {name: len(invocations(bench, name, spec)) for name, spec in bench["strategies"].items()}
    assert per == {"all-gpu": 4, "exps-cpu": 4, "n-cpu-moe": 20, "fit-1024": 4, "fit-256": 4, "c7": 2, "c7-mmap": 2,
                   "layer-split": 10, "n-cpu-moe-b4096": 10, "fit-1024-b4096": 2, "fit-256-b4096": 2}
    assert sum(per.values()) == 64
