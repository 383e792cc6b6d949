"""Offload tuner: the fastest setting (generation tokens/s) whose measured VRAM peak fits a budget.

Each probe is one llama-bench call at the served context, with the GPU showing only the budget free (the job
emulates the smaller card), so what fits in the run fits on the card. The candidates, in the order measured:

1. references: `-ot exps=CPU`, `--fit` with the CLI's 1 GiB margin and with 256 MiB (what a user would try);
2. `--n-cpu-moe N`: device memory falls as N rises (each step moves one more layer's experts to the CPU), so the
   smallest N that fits is found by bisection on measured VRAM, and the next two N are measured too (speed
   usually falls with N, not always);
3. `--fit` with its margin searched (bisection below the smallest reference margin that fits) so that its
   peak meets the budget instead of leaving a margin unused;
4. between two N: the experts of layers < N−1 on the CPU and part of layer N−1's (up and gate, or up alone), by
   `-ot` patterns, which fill the memory an N step leaves free.

The answer is the fastest fitting probe, so it is at least as fast as every reference that fits in the same
run; the record says which family won and counts the probes against a full sweep of every candidate. A probe
that does not fit in device memory at all (llama.cpp's allocation failed) counts as over the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

FIT_MARGINS = (1024, 256)    # the references: --fit's default margin and the study's --fit-target 256
FIT_FLOOR_MIB = 32           # the margin search stops this close to the smallest fitting margin


@dataclass
class Probe:
    n_cpu_moe: int | None
    tg_ts: float | None
    vram_mib: float | None
    pp_ts: float | None = None
    status: str = "measured"        # or "does not fit": llama.cpp ran out of device memory
    reason: str = ""
    free_mib: float | None = None   # device memory free when a probe did not fit
    setting: dict = field(default_factory=dict)  # the llama-bench offload flags, as a bench strategy names them
    family: str = "n_cpu_moe"       # reference | n_cpu_moe | fit | partial

    def fits(self, budget_mib: float) -> bool:
        return self.status == "measured" and self.vram_mib is not None and self.vram_mib <= budget_mib

    def memory_text(self) -> str:
        return f"{self.vram_mib:.0f} MiB" if self.status == "measured" else f"does not fit ({self.reason})"

    @property
    def label(self) -> str:
        return setting_label(self.setting or {"n_cpu_moe": self.n_cpu_moe})


def setting_label(s: dict) -> str:
    parts = []
    if s.get("fit_target"):
        parts.append(f"--fit, margin {s['fit_target']} MiB")
    if s.get("n_cpu_moe"):
        parts.append(f"-ncmoe {s['n_cpu_moe']}")
    if s.get("override_tensor"):
        parts.append(f"-ot {s['override_tensor']}")
    return " ".join(parts) or "-ncmoe 0"


def partial_layer(layer: int, which: str) -> str:
    """-ot pattern moving part of one layer's experts to the CPU (which: 'up|gate' or 'up')."""
    return f"blk\\.{layer}\\.ffn_({which})_exps=CPU"


@dataclass
class TuneResult:
    budget_mib: float
    n_layer: int
    best: Probe | None
    probes: list[Probe] = field(default_factory=list)
    full_sweep_runs: int = 0
    note: str = ""
    best_family: str | None = None
    best_reference: Probe | None = None   # the fastest fitting reference of the same run

    def to_dict(self) -> dict:
        return asdict(self)


def tune_n_cpu_moe(measure: Callable[[int], Probe], n_layer: int, budget_mib: float,
                   neighbours: int = 2) -> TuneResult:
    """The --n-cpu-moe family alone: bisection for the smallest fitting N, then the next `neighbours` N."""
    probes: dict[int, Probe] = {}

    def probe(n: int) -> Probe:
        if n not in probes:
            probes[n] = measure(n)
        return probes[n]

    result = TuneResult(budget_mib, n_layer, None, full_sweep_runs=n_layer + 1)
    if not probe(n_layer).fits(budget_mib):
        result.note = (f"does not fit even with every layer's experts on the CPU (N={n_layer}: "
                       f"{probes[n_layer].memory_text()}, budget {budget_mib:.0f} MiB)")
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


def _bisect_fit_margin(probe, fitting_margins: list[int], budget_mib: float) -> None:
    """Bisect the --fit margin below the smallest that fits: the least left unused that still fits."""
    if not fitting_margins:
        return
    lo, hi = 0, min(fitting_margins)
    while hi - lo > FIT_FLOOR_MIB:
        mid = (lo + hi) // 2
        if probe({"fit_target": max(mid, 1)}, "fit").fits(budget_mib):
            hi = mid
        else:
            lo = mid


def _fill_partial_layer(probe, n_min: int, budget_mib: float) -> None:
    """Fill the step below the smallest fitting N with part of layer N-1's experts kept on the GPU."""
    if n_min <= 0:
        return
    for which in ("up|gate", "up"):
        s = {"n_cpu_moe": n_min - 1, "override_tensor": partial_layer(n_min - 1, which)}
        if not probe(s, "partial").fits(budget_mib):
            break  # moving less of the layer will not fit either


def tune(measure: Callable[[dict], Probe], n_layer: int, budget_mib: float, fit: bool = True) -> TuneResult:
    """Every family above; measure(setting) runs one probe of a llama-bench offload setting (keys n_cpu_moe,
    override_tensor, fit_target) and returns its Probe. fit=False: a llama.cpp without --fit, no fit probes."""
    margins = FIT_MARGINS if fit else ()
    probes: list[Probe] = []
    seen: dict[tuple, Probe] = {}

    def probe(setting: dict, family: str) -> Probe:
        key = tuple(sorted(setting.items()))
        if key not in seen:
            p = measure(setting)
            p.setting, p.family = dict(setting), family
            seen[key] = p
            probes.append(p)
        return seen[key]

    refs = [probe({"override_tensor": "exps=CPU"}, "reference")]
    refs += [probe({"fit_target": m}, "reference") for m in margins]

    ncmoe = tune_n_cpu_moe(lambda n: probe({"n_cpu_moe": n}, "n_cpu_moe"), n_layer, budget_mib)

    _bisect_fit_margin(probe, [m for m in margins if seen[(("fit_target", m),)].fits(budget_mib)], budget_mib)
    if ncmoe.best is not None:
        _fill_partial_layer(probe, min(p.n_cpu_moe for p in ncmoe.probes if p.fits(budget_mib)), budget_mib)

    fitting = [p for p in probes if p.fits(budget_mib)]
    result = TuneResult(budget_mib, n_layer, None, probes,
                        full_sweep_runs=len(margins) + 1 + (n_layer + 1) + 2 * n_layer + 1024 // FIT_FLOOR_MIB)
    fitting_refs = [p for p in refs if p.fits(budget_mib)]
    result.best_reference = max(fitting_refs, key=lambda p: p.tg_ts) if fitting_refs else None
    if not fitting:
        result.note = (f"nothing fits in {budget_mib:.0f} MiB: " + "; ".join(
            f"{p.label}: {p.memory_text()}" for p in probes[:4]))
        return result
    result.best = max(fitting, key=lambda p: p.tg_ts)
    result.best_family = result.best.family
    ref = result.best_reference
    result.note = (f"{result.best.label} at {result.best.tg_ts:.1f} t/s, {result.best.vram_mib:.0f} MiB"
                   + (f"; the best reference that fits, {ref.label}, {ref.tg_ts:.1f} t/s at {ref.vram_mib:.0f} MiB"
                      if ref else "; no reference setting fits")
                   + f"; {ncmoe.note}")
    return result
