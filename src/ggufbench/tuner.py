"""Offload tuner: for a VRAM budget, the --n-cpu-moe N with the best generation speed that fits.

Device memory falls as N rises (each step moves one more layer's experts to the CPU), so the smallest N that
fits is found by bisection on measured VRAM; generation speed usually falls as N rises, but not always (PCIe
and CPU threads interact), so the two next N are measured too and the fastest fitting one wins. That is
about log2(n_layer) + 3 llama-bench runs instead of n_layer + 1 for the full sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Probe:
    n_cpu_moe: int
    tg_ts: float
    vram_mib: float
    pp_ts: float | None = None

    def fits(self, budget_mib: float) -> bool:
        return self.vram_mib <= budget_mib


@dataclass
class TuneResult:
    budget_mib: float
    n_layer: int
    best: Probe | None
    probes: list[Probe] = field(default_factory=list)
    full_sweep_runs: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def tune_n_cpu_moe(measure: Callable[[int], Probe], n_layer: int, budget_mib: float,
                   neighbours: int = 2) -> TuneResult:
    probes: dict[int, Probe] = {}

    def probe(n: int) -> Probe:
        if n not in probes:
            probes[n] = measure(n)
        return probes[n]

    result = TuneResult(budget_mib, n_layer, None, full_sweep_runs=n_layer + 1)
    if not probe(n_layer).fits(budget_mib):
        result.note = (f"does not fit even with every layer's experts on the CPU (N={n_layer}: "
                       f"{probes[n_layer].vram_mib:.0f} MiB > {budget_mib:.0f} MiB)")
    else:
        lo, hi = 0, n_layer
        while lo < hi:
            mid = (lo + hi) // 2
            if probe(mid).fits(budget_mib):
                hi = mid
            else:
                lo = mid + 1
        for n in range(lo + 1, min(lo + neighbours, n_layer) + 1):
            probe(n)
        fitting = [p for p in probes.values() if p.fits(budget_mib)]
        result.best = max(fitting, key=lambda p: p.tg_ts)
        result.note = f"smallest fitting N = {lo}"
    result.probes = [probes[n] for n in sorted(probes)]
    return result
