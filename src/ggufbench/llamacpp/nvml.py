"""GPU facts and device-memory sampling through NVML (module `pynvml` from the nvidia-ml-py package).

Without a GPU or NVML every function returns a record that says so and why; nothing here raises for a
missing GPU, so the same code paths run on CPU-only machines (CI) and on GPU nodes.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field


def _nvml():
    """pynvml initialised, or (None, reason)."""
    try:
        import pynvml
    except ImportError as e:  # the package is a dependency; still, say it plainly
        return None, f"pynvml not importable ({e}); install nvidia-ml-py"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"no GPU: NVML unavailable ({type(e).__name__}: {e})"
    return pynvml, None


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def gpu_info() -> dict:
    """{'available': bool, 'reason'?, 'driver', 'cuda_driver', 'gpus': [{index,name,memory_total_mib,cc}]}"""
    nv, why = _nvml()
    if nv is None:
        return {"available": False, "reason": why, "gpus": []}
    try:
        n = nv.nvmlDeviceGetCount()
        gpus = []
        for i in range(n):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            cc = nv.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append({"index": i, "name": _s(nv.nvmlDeviceGetName(h)),
                         "memory_total_mib": nv.nvmlDeviceGetMemoryInfo(h).total / 2**20,
                         "compute_capability": f"{cc[0]}.{cc[1]}"})
        drv = _s(nv.nvmlSystemGetDriverVersion())
        cuda = nv.nvmlSystemGetCudaDriverVersion_v2()
        info = {"available": n > 0, "driver": drv, "cuda_driver": f"{cuda // 1000}.{(cuda % 1000) // 10}",
                "gpus": gpus}
        if n == 0:
            info["reason"] = "no GPU: NVML found no devices"
        return info
    finally:
        nv.nvmlShutdown()


@dataclass
class VramPeak:
    """Peak device memory during a run, less what was in use before it (MiB), per GPU and summed."""

    available: bool
    reason: str = ""
    baseline_mib: float | None = None
    peak_used_mib: float | None = None
    peak_delta_mib: float | None = None
    free_before_mib: float | None = None   # what was free when the run started (all GPUs): what "fits" means
    samples: int = 0
    interval_s: float = 0.0
    per_gpu_delta_mib: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class VramSampler:
    """Context manager: samples used memory of all GPUs every interval_s in a background thread."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.result = VramPeak(available=False, reason="not started")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> VramSampler:
        nv, why = _nvml()
        if nv is None:
            self.result = VramPeak(available=False, reason=why)
            return self
        self._nv = nv
        self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        if not self._handles:
            nv.nvmlShutdown()
            self.result = VramPeak(available=False, reason="no GPU: NVML found no devices")
            self._nv = None
            return self
        self._base = self._used()
        self._free = sum(nv.nvmlDeviceGetMemoryInfo(h).free / 2**20 for h in self._handles)
        self._peak = list(self._base)
        self._n = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _used(self) -> list[float]:
        return [self._nv.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in self._handles]

    def _loop(self) -> None:
        while not self._stop.is_set():
            for i, u in enumerate(self._used()):
                self._peak[i] = max(self._peak[i], u)
            self._n += 1
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        deltas = [p - b for p, b in zip(self._peak, self._base, strict=True)]
        self.result = VramPeak(available=True, baseline_mib=sum(self._base), peak_used_mib=sum(self._peak),
                               peak_delta_mib=sum(deltas), free_before_mib=self._free, samples=self._n,
                               interval_s=self.interval_s, per_gpu_delta_mib=deltas)
        self._nv.nvmlShutdown()
