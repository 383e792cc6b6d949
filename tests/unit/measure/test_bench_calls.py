"""measure.bench_calls: a strategy's llama-bench calls (one per offload setting, KV, -b/-ub, context) and the rows a
call that does not fit stands for."""

from __future__ import annotations

from ggufbench.core.config import defaults
from ggufbench.measure.bench_calls import invocations, planned_rows, strategy_settings


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
