"""llama-bench plans: strategies -> calls, and the noise summary on real repetitions (H200 capture)."""

from __future__ import annotations

from pathlib import Path

from ggufbench import bench

CUDA = Path(__file__).parent / "data" / "cuda-h200"


def test_n_cpu_moe_list_is_one_call_per_n_and_kv():
    plan = {"kv": ["f16", "q8_0"], "batch": None, "ubatch": [512]}
    calls = bench.invocations(plan, "n-cpu-moe", {"n_cpu_moe": [16, 24]})
    assert [(c["n_cpu_moe"], c["kv"], c["ubatch"]) for c in calls] == [
        (16, "f16", 512), (16, "q8_0", 512), (24, "f16", 512), (24, "q8_0", 512)]
    assert all(c["strategy"] == "n-cpu-moe" and c["batch"] is None for c in calls)


def test_setting_args():
    assert bench.setting_args({"override_tensor": "exps=CPU"}, True, 99) == ["-ngl", "99", "-ot", "exps=CPU"]
    assert bench.setting_args({"n_cpu_moe": 24}, True, 99) == ["-ngl", "99", "-ncmoe", "24"]
    assert bench.setting_args({"fit_target": 256}, True, 99) == ["-ngl", "99", "-fitt", "256"]
    assert bench.setting_args({}, False, 99) == []  # a CPU build gets no -ngl
    assert bench.setting_args({"n_gpu_layers": 0}, True, 99) == ["-ngl", "0"]


def test_summary_leaves_out_the_cold_repetition():
    """The H200's pp512 of Q8_0: 19794, 56162, 57274 t/s — the first repetition ran cold."""
    text = (CUDA / "bench_q8_0.log").read_text()
    rows = bench.parse_bench_jsonl("\n".join(ln for ln in text.splitlines() if ln.startswith("{")))
    pp = bench.summarize(rows[0], discard_first=True, noise_pct=5.0)
    assert pp["samples_ts"] == [19794.1, 56161.6, 57274.4]
    assert (pp["min_ts"], pp["max_ts"], pp["n_samples_kept"]) == (56161.6, 57274.4, 2)
    assert pp["first_sample_discarded"] and not pp["noisy"]  # 2.0% range
    cold = bench.summarize(rows[0], discard_first=False, noise_pct=5.0)
    assert cold["noisy"] and cold["spread_pct"] > 60
