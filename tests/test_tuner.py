"""The offload tuner's search, against a memory/speed curve shaped like a MoE offload sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from ggufbench import bench
from ggufbench.errors import ToolFailed
from ggufbench.jobs import tune_probe
from ggufbench.tuner import Probe, tune_n_cpu_moe

BENCH_JSONL = Path(__file__).parent / "data/cpu-0.3.36/bench_q8_0.jsonl"


def curve(n_layer=40, total_mib=20000.0, experts_share=0.9):
    """VRAM falls linearly as experts move to the CPU; tg speed falls too, except a dip at N=25."""
    per_layer = total_mib * experts_share / n_layer
    calls = []

    def measure(n: int) -> Probe:
        calls.append(n)
        tg = 100.0 - 1.5 * n - (8.0 if n == 25 else 0.0)
        return Probe(n, tg, total_mib - per_layer * n)

    return measure, calls


def test_smallest_fitting_n_is_best_and_runs_fewer_than_the_sweep():
    measure, calls = curve()
    r = tune_n_cpu_moe(measure, 40, budget_mib=16 * 1024)
    # 20000 - 450 N <= 16384  ->  N >= 8.04 -> 9
    assert r.best.n_cpu_moe == 9
    assert len(calls) == len(set(calls)) < 41 // 3
    assert r.full_sweep_runs == 41


def test_a_slow_smallest_n_loses_to_its_neighbour():
    measure, _ = curve()
    # 20000 - 450 N <= 8750 -> N >= 25: N=25 has the dip, N=26 is faster
    r = tune_n_cpu_moe(measure, 40, budget_mib=8750)
    assert r.best.n_cpu_moe == 26


def test_nothing_fits():
    measure, calls = curve()
    r = tune_n_cpu_moe(measure, 40, budget_mib=1000)
    assert r.best is None and "does not fit" in r.note and calls == [40]


def test_a_probe_reads_the_generation_row_and_the_prompt_row_of_real_llama_bench_output():
    text = BENCH_JSONL.read_text()
    rows = {r["test"]: bench.summarize(r, True, 5.0) for r in bench.parse_bench_jsonl(text)}
    p = tune_probe(7, text, 1234.5, "x.log")
    assert (p.n_cpu_moe, p.vram_mib) == (7, 1234.5)
    assert p.tg_ts == rows["tg128"]["median_ts"] and p.pp_ts == rows["pp512"]["median_ts"]
    assert p.tg_ts < p.pp_ts


def test_a_probe_without_a_generation_row_fails_and_names_the_log():
    pp_only = BENCH_JSONL.read_text().splitlines()[0]
    with pytest.raises(ToolFailed, match=r"no generation row for -ncmoe 3 \(see logs/t.log\)"):
        tune_probe(3, pp_only, 10.0, "logs/t.log")
