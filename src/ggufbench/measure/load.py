"""The machine's load during one tool call: how much CPU time processes other than this job took while it ran,
so a speed measured on a busy machine says so (issue 25: tg128 93 -> 6.1 t/s under a CPU hog, reported clean).

Method: the CPU time of every process on the job's CPUs, from /proc/stat (the per-CPU lines of the CPUs this
process may run on, os.sched_getaffinity: the tool inherits them), less this job's own CPU time, from os.times():
this Python process (all its threads: the samplers, the output pumps) plus the children it has waited for (the
kernel's RUSAGE_CHILDREN, which holds a child's whole process tree once reaped). The tool is waited for inside
the call, so the difference at the end is the CPU time of everything else. Why not the tool's pid tree from
/proc/<pid>/stat: it needs the pid from the runner, and the tool's last moments before exit fall between samples
and would be counted as someone else's; the rusage way is exact at the end and needs nothing from the runner.
Busy time is user, nice, system, irq, softirq and steal (steal: a hypervisor gave our CPUs to other guests, which
costs a benchmark the same). Both counts tick at USER_HZ, so a few ticks (0.01 s each) of rounding remain.

The verdict uses that share, not the load average: the 1-minute load average counts the tool's own threads
(llama-bench with -t 2 alone makes 2 on a 2-CPU machine) and lags a short call by up to a minute; it is kept
as context (at the start and its maximum, sampled in a background thread like nvml.VramSampler's).

Limits: the job's CPUs are its affinity set; a cgroup CPU quota (cpu.max) on a larger host is not seen, and a
child this job started and reaped during the call counts as its own (the tool's retry with -v is, rightly).
Not Linux (no /proc/stat): "not measured" with the reason, never a zero.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")

# Other processes above this share of the job's CPUs make a call "loaded". Why 10%: llama.cpp's threads meet at a
# barrier every op, so one preempted thread stalls them all and the speed lost is many times the CPU taken (issue
# 25: a hog on every core cut tg128 15x; measured on a shared 2-CPU machine, llama-bench -t 2 on a tiny model:
# 44-157 t/s for tg16 beside others' jobs, 7.6 with one busy loop added, 1.8 with two). 10% is one other process
# busy a fifth of the time on 2 CPUs, a twentieth on 16: more than kernel threads and the workflow's own Snakemake
# should take (an idle machine's share is yet to be measured: the one this was written on never was idle).
LOADED_SHARE = 0.10

# /proc/stat's per-CPU columns: user nice system idle iowait irq softirq steal (guest time is inside user)
BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


@dataclass
class Load:
    """What other processes took of the job's CPUs during one call."""

    available: bool
    reason: str = ""
    n_cpus: int | None = None
    loadavg_start: float | None = None
    loadavg_max: float | None = None
    wall_seconds: float | None = None
    busy_cpu_seconds: float | None = None    # every process on the job's CPUs
    own_cpu_seconds: float | None = None     # this process and the tools it ran
    other_cpu_seconds: float | None = None
    other_cpu_share: float | None = None     # other_cpu_seconds / (n_cpus x wall_seconds)
    samples: int = 0
    interval_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _busy_seconds(cpus: list[int]) -> tuple[float, int]:
    """CPU seconds spent busy so far on these CPUs, and how many of them /proc/stat lists (offline ones it omits)."""
    ticks, seen = 0, 0
    wanted = {f"cpu{c}" for c in cpus}
    for line in (PROC / "stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name in wanted:
            cols = [int(x) for x in rest.split()]
            ticks += sum(cols[i] for i in BUSY_COLUMNS if i < len(cols))
            seen += 1
    return ticks / os.sysconf("SC_CLK_TCK"), seen


def _loadavg() -> float:
    return float((PROC / "loadavg").read_text().split()[0])


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadSampler:
    """Context manager around one tool call: `with LoadSampler() as load: run(...)`, then load.result (a Load).
    Samples the load average every interval_s in a background thread; the CPU times are read at the start and
    the end (the tool must have been waited for inside the block)."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self.result = Load(available=False, reason="not started")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LoadSampler:
        self._cpus = _cpus()
        try:
            self._busy0, n = _busy_seconds(self._cpus)
            self._load0 = _loadavg()
        except (OSError, ValueError, IndexError) as e:
            self.result = Load(available=False, reason=f"no Linux /proc/stat and /proc/loadavg here ({type(e).__name__}"
                                                       f": {e}): the CPU load of other processes is read from them")
            return self
        if n == 0:
            self.result = Load(available=False, reason=f"{PROC / 'stat'} lists none of this process's CPUs "
                                                       f"{self._cpus}")
            return self
        self._n_cpus = n
        self._load_max = self._load0
        self._n = 1
        self._own0 = _own_seconds()
        self._t0 = time.monotonic()
        self._busy0 = _busy_seconds(self._cpus)[0]  # again, next to the other two: the first read checked /proc
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._load_max = max(self._load_max, _loadavg())
            except (OSError, ValueError, IndexError):  # read at the start; a failure now is not worth the call
                continue
            self._n += 1

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        try:
            own = _own_seconds() - self._own0  # the three read together, as at the start
            busy = _busy_seconds(self._cpus)[0] - self._busy0
            wall = time.monotonic() - self._t0
            self._load_max = max(self._load_max, _loadavg())
        except (OSError, ValueError, IndexError) as e:
            self.result = Load(available=False, reason=f"/proc/stat unreadable at the end of the call ({e})")
            return
        # tick rounding (0.01 s a tick, per CPU) can put it a little below 0 on an idle machine or above the
        # capacity on a full one
        other = min(max(0.0, busy - own), self._n_cpus * wall)
        self.result = Load(available=True, n_cpus=self._n_cpus, loadavg_start=self._load0,
                           loadavg_max=self._load_max, wall_seconds=wall, busy_cpu_seconds=busy,
                           own_cpu_seconds=own, other_cpu_seconds=other,
                           other_cpu_share=other / (self._n_cpus * wall) if wall > 0 else None,
                           samples=self._n, interval_s=self.interval_s)


def load_verdict(load: dict | None, threshold: float = LOADED_SHARE) -> tuple[bool | None, str]:
    """(loaded, why) for a call's Load.to_dict(): loaded when other processes took more than `threshold` of its
    CPUs; None ("not measured") for a record made before load was sampled or a machine without /proc."""
    if not load:
        return None, "not measured: recorded before ggufbench sampled the machine's load"
    if not load.get("available") or load.get("other_cpu_share") is None:
        return None, f"not measured: {load.get('reason') or 'the call was too short to time'}"
    share, n = load["other_cpu_share"], load["n_cpus"]
    why = (f"other processes took {100 * share:.0f}% of the {n} CPU{'s' if n != 1 else ''} during the call "
           f"(load average up to {load['loadavg_max']:.1f})")
    return share > threshold, why


def log_load(log, load: dict) -> None:
    """The call's load verdict in the job's log too (next to its VRAM line)."""
    loaded, why = load_verdict(load)
    with open(log, "a") as f:
        f.write(f"# {'LOADED: ' if loaded else ''}{why}\n")
