"""The offload tuner's search, against a memory/speed curve shaped like a MoE offload sweep."""

from __future__ import annotations

from ggufbench.measure.tuner import Probe, tune, tune_n_cpu_moe


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


def card(total_mib=21000.0, non_expert_mib=1600.0, n_layer=40, free_mib=16384.0):
    """A MoE on a card of free_mib: experts leave the GPU layer by layer (a partial layer by thirds); --fit
    fills what is free less its margin; speed rises with what is on the GPU; over the free memory nothing loads."""
    per = (total_mib - non_expert_mib) / n_layer
    calls = []

    def measure(s: dict) -> Probe:
        calls.append(s)
        if s.get("override_tensor") == "exps=CPU":
            vram = non_expert_mib
        elif "fit_target" in s:
            vram = max(non_expert_mib, free_mib - s["fit_target"] - 40)  # it cannot put less than that there
        else:
            n = s.get("n_cpu_moe", 0)
            vram = total_mib - per * n
            pat = s.get("override_tensor", "")
            vram -= per * (2 / 3 if "up|gate" in pat else 1 / 3 if pat else 0)
        if vram > free_mib:
            return Probe(s.get("n_cpu_moe"), None, None, status="does not fit", reason="cudaMalloc failed")
        return Probe(s.get("n_cpu_moe"), 10 + vram / 1000, vram)

    return measure, calls


def test_the_tuner_answers_at_least_the_best_fitting_reference_and_fills_the_budget():
    measure, calls = card()
    r = tune(measure, 40, budget_mib=16384)
    ref = r.best_reference
    assert ref is not None and ref.setting == {"fit_target": 256}
    assert r.best.tg_ts >= ref.tg_ts and r.best.vram_mib <= 16384
    # the margin was searched below 256 MiB, to within FIT_FLOOR_MIB of what fits
    assert r.best.family == "fit" and r.best.setting["fit_target"] <= 64
    assert {p.family for p in r.probes} == {"reference", "n_cpu_moe", "fit", "partial"}
    assert len(calls) == len(r.probes) < r.full_sweep_runs // 5


def test_a_partial_layer_fills_the_step_between_two_n():
    measure, _ = card()
    r = tune(measure, 40, budget_mib=16384)
    n_min = min(p.n_cpu_moe for p in r.probes if p.family == "n_cpu_moe" and p.fits(16384))
    partial = [p for p in r.probes if p.family == "partial"]
    pattern = "blk\\." + str(n_min - 1) + "\\.ffn_(up|gate)_exps=CPU"
    assert partial[0].setting == {"n_cpu_moe": n_min - 1, "override_tensor": pattern}
    # two thirds of layer N-1's experts on the CPU fit where N-1 did not, and run faster than N
    at_n = next(p for p in r.probes if p.setting == {"n_cpu_moe": n_min})
    assert partial[0].fits(16384) and partial[0].tg_ts > at_n.tg_ts


def test_probes_that_do_not_fit_count_as_over_the_budget():
    measure, _ = card(free_mib=1000.0)
    r = tune(measure, 40, budget_mib=1000)
    assert r.best is None and r.best_reference is None and r.note.startswith("nothing fits in 1000 MiB")
    assert {p.status for p in r.probes} == {"does not fit"}
