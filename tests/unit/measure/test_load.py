"""measure.load: the CPU time other processes took during a tool call, from /proc/stat less this job's own (its
process and the children it waited for); a call under a real CPU hog is "loaded", a machine without /proc says
"not measured", and bench records made before the load was sampled read as "not measured" in the bench table."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ggufbench.measure import load as load_mod
from ggufbench.measure.load import LOADED_SHARE, LoadSampler, load_verdict
from ggufbench.report.tables import bench_rows

# a fixed amount of CPU work (not a fixed time), so a loaded machine stretches it instead of shortening it
WORK = "import time\nx = 0\nfor i in range(12_000_000):\n    x += i\nprint(time.process_time())"


def hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def test_the_tools_own_cpu_time_is_the_jobs_not_other_processes():
    with LoadSampler(interval_s=0.05) as s:
        child = subprocess.run([sys.executable, "-c", WORK], capture_output=True, text=True, check=True)
    r = s.result
    child_cpu = float(child.stdout)
    assert r.available and r.n_cpus == len(os.sched_getaffinity(0)) and r.samples >= 2
    assert r.own_cpu_seconds >= child_cpu - 0.05  # tick rounding: 0.01 s a tick
    capacity = r.n_cpus * r.wall_seconds
    assert r.other_cpu_seconds == pytest.approx(min(max(0.0, r.busy_cpu_seconds - r.own_cpu_seconds), capacity))
    assert 0 <= r.other_cpu_share <= 1
    assert r.other_cpu_share == pytest.approx(r.other_cpu_seconds / (r.n_cpus * r.wall_seconds))
    assert r.loadavg_max >= r.loadavg_start >= 0


@pytest.mark.faults
def test_a_call_made_beside_a_cpu_hog_on_every_cpu_is_loaded():
    """Other processes' CPU is counted even when they are this process's own children, as long as they are not
    reaped during the call (a stranger's never are); the same work alone, just before, took a smaller share."""
    n = len(os.sched_getaffinity(0))
    with LoadSampler() as clean:
        subprocess.run([sys.executable, "-c", WORK], capture_output=True, check=True)
    procs = hogs(n)
    try:
        time.sleep(0.3)
        with LoadSampler() as busy:
            subprocess.run([sys.executable, "-c", WORK], capture_output=True, check=True)
    finally:
        stop(procs)
    c, b = clean.result.to_dict(), busy.result.to_dict()
    loaded, why = load_verdict(b)
    assert loaded and b["other_cpu_share"] > max(LOADED_SHARE, c["other_cpu_share"]), (c, b)
    assert why.startswith("other processes took ") and f"of the {n} CPU" in why
    assert load_verdict(c)[0] == (c["other_cpu_share"] > LOADED_SHARE)


def test_without_proc_the_load_is_not_measured_and_never_zero(monkeypatch, tmp_path):
    monkeypatch.setattr(load_mod, "PROC", tmp_path / "no-proc")
    with LoadSampler() as s:
        pass
    d = s.result.to_dict()
    assert not d["available"] and "/proc/stat" in d["reason"] and "no-proc" in d["reason"]
    assert d["other_cpu_share"] is None and d["other_cpu_seconds"] is None
    loaded, why = load_verdict(d)
    assert loaded is None and why.startswith("not measured: no Linux /proc/stat")


def test_the_verdict_says_what_other_processes_took():
    d = {"available": True, "other_cpu_share": 0.48, "n_cpus": 2, "loadavg_max": 3.14}
    assert load_verdict(d) == (True, "other processes took 48% of the 2 CPUs during the call (load average up to "
                                     "3.1)")
    assert load_verdict({**d, "other_cpu_share": 0.03, "n_cpus": 1}) == (
        False, "other processes took 3% of the 1 CPU during the call (load average up to 3.1)")
    assert load_verdict({**d, "other_cpu_share": 0.48}, threshold=0.5)[0] is False
    assert load_verdict(None) == (None, "not measured: recorded before ggufbench sampled the machine's load")


def test_bench_rows_carry_the_load_and_say_not_measured_for_records_made_before_it():
    load = {"available": True, "other_cpu_share": 0.48, "n_cpus": 2, "loadavg_max": 3.1}
    row = {"n_prompt": 0, "n_gen": 128, "test": "tg128", "avg_ts": 6.1, "vram": {"available": False},
           "setting": {}}
    new = {"provenance": {"build": "new"}, "params": {}, "result": {"rows": [{**row, "load": load, "loaded": True}]}}
    old = {"provenance": {"build": "old"}, "params": {}, "result": {"rows": [row]}}
    df = bench_rows([new, old]).set_index("build")
    cols = ["load_available", "loaded", "load_other_cpu_share", "load_loadavg_max", "load_reason"]
    assert df.loc["new", cols].tolist() == [True, True, 0.48, 3.1, "other processes took 48% of the 2 CPUs during "
                                                                   "the call (load average up to 3.1)"]
    assert not df.loc["old", "load_available"] and df.loc["old", "loaded"] is None
    assert df.loc["old", "load_reason"].startswith("not measured: recorded before")
    assert df.loc["old", ["load_other_cpu_share", "load_loadavg_max"]].isna().all()
    assert "load" not in df.columns
