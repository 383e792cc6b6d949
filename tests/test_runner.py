"""Running tools with real processes (exit statuses, signals, missing binaries, the log), atomic JSON
records, and NVML's no-GPU path (the same code runs on CPU-only machines and GPU nodes)."""

import json

import pytest

from ggufbench import nvml
from ggufbench.errors import ToolFailed
from ggufbench.runner import ToolRun, read_json, run_tool, write_json

# --- run_tool -------------------------------------------------------------------------------------------


def test_success_returns_output_and_logs(tmp_path):
    log = tmp_path / "job.log"
    r = run_tool(["sh", "-c", "echo first; echo second >&2; echo third"], log)
    assert isinstance(r, ToolRun)
    assert r.returncode == 0
    assert r.cmd == ["sh", "-c", "echo first; echo second >&2; echo third"]
    # stdout and stderr interleaved, in the order printed
    assert r.output == "first\nsecond\nthird\n"
    assert r.stdout == r.output
    assert r.wall_seconds >= 0
    text = log.read_text()
    assert text.startswith("$ sh -c 'echo first; echo second >&2; echo third'\n")
    assert "first\nsecond\nthird\n" in text
    assert "# exit status 0," in text


def test_log_is_appended_not_replaced(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("earlier job output\n")
    run_tool(["sh", "-c", "echo one"], log)
    run_tool(["sh", "-c", "echo two"], log)
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier job output"
    assert lines.index("one") < lines.index("two")
    assert sum(line.startswith("# exit status 0") for line in lines) == 2


def test_separate_stdout_keeps_data_clean(tmp_path):
    # llama-bench: JSONL on stdout, progress and errors on stderr
    log = tmp_path / "bench.log"
    r = run_tool(["sh", "-c", "echo progress >&2; echo '{\"avg_ts\": 1}'"], log, separate_stdout=True)
    assert r.stdout == '{"avg_ts": 1}\n'
    assert "progress" in r.output and '{"avg_ts": 1}' in r.output
    text = log.read_text()
    assert "progress" in text and '{"avg_ts": 1}' in text


def test_args_are_stringified(tmp_path):
    r = run_tool(["sh", "-c", 'echo "$0 $1"', 512, tmp_path])
    assert r.output == f"512 {tmp_path}\n"
    assert r.cmd == ["sh", "-c", 'echo "$0 $1"', "512", str(tmp_path)]


def test_env_is_added_to_the_environment():
    r = run_tool(["sh", "-c", 'echo "$GGUFBENCH_TEST_VAR:${PATH:+has-path}"'], env={"GGUFBENCH_TEST_VAR": "x"})
    assert r.output == "x:has-path\n"


def test_nonzero_exit(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(ToolFailed) as ei:
        run_tool(["sh", "-c", "exit 3"], log)
    msg = str(ei.value)
    assert "sh exited with status 3" in msg
    assert "# exit status 3," in log.read_text()


def test_nonzero_exit_shows_last_lines(tmp_path):
    script = "for i in 1 2 3 4 5 6 7; do echo line$i; done; echo 'error: boom' >&2; exit 1"
    with pytest.raises(ToolFailed) as ei:
        run_tool(["sh", "-c", script], tmp_path / "job.log")
    msg = str(ei.value)
    assert "status 1" in msg
    tail = msg.split("last lines:\n", 1)[1].splitlines()
    assert tail == ["line4", "line5", "line6", "line7", "error: boom"]


def test_nonzero_exit_with_separate_stdout_includes_stderr(tmp_path):
    with pytest.raises(ToolFailed, match="failed to load model 'nonexist.gguf'"):
        run_tool(["sh", "-c", "echo \"llama_bench: error: failed to load model 'nonexist.gguf'\" >&2; exit 1"],
                 tmp_path / "job.log", separate_stdout=True)


def test_killed_by_sigkill(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(ToolFailed) as ei:
        run_tool(["sh", "-c", "kill -9 $$"], log)
    msg = str(ei.value)
    assert "killed by SIGKILL" in msg
    assert "out of memory?" in msg  # the OOM killer's signal gets the hint
    assert "# exit status -9," in log.read_text()


def test_killed_by_sigterm_has_no_oom_hint():
    with pytest.raises(ToolFailed) as ei:
        run_tool(["sh", "-c", "kill -TERM $$"])
    msg = str(ei.value)
    assert "killed by SIGTERM" in msg
    assert "out of memory" not in msg


def test_missing_binary(tmp_path):
    log = tmp_path / "job.log"
    tool = tmp_path / "bin" / "llama-perplexity"
    with pytest.raises(ToolFailed) as ei:
        run_tool([tool, "-m", "x.gguf"], log)
    msg = str(ei.value)
    assert f"{tool} not found" in msg
    assert "build step" in msg
    assert log.read_text().startswith(f"$ {tool} -m x.gguf\n")  # the attempt is in the log


def test_killed_by_realtime_signal():
    with pytest.raises(ToolFailed, match="killed by"):
        run_tool(["sh", "-c", "kill -35 $$"])


# --- write_json / read_json -----------------------------------------------------------------------------


def test_write_json_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "results" / "kld" / "cpu" / "Q2_K_ctx512.json"  # parents are made
    record = {"stage": "kld", "result": {"kld_mean": 0.416352, "same_top_p_pct": 68.725}, "path": tmp_path}
    write_json(path, record)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .partial left behind
    back = read_json(path)
    assert back["result"] == {"kld_mean": 0.416352, "same_top_p_pct": 68.725}
    assert back["path"] == str(tmp_path)  # default=str for paths
    assert path.read_text().endswith("}\n")


def test_write_json_replaces_existing(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"v": 1})
    write_json(path, {"v": 2})
    assert read_json(path) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_write_json_failure_leaves_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"v": 1})
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError):
        write_json(path, circular)
    assert read_json(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_read_json_invalid(tmp_path):
    path = tmp_path / "half.json"
    path.write_text('{"stage": "perplexity", "result": {"ppl": 12.02')  # a half-written record
    with pytest.raises(ToolFailed) as ei:
        read_json(path)
    msg = str(ei.value)
    assert str(path) in msg
    assert "not valid JSON" in msg
    assert "delete it and rerun" in msg


def test_read_json_missing_file_is_not_hidden(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "nope.json")


def test_read_json_real_values(tmp_path, capture):
    path = tmp_path / "bench.json"
    path.write_text(capture("bench_q8_0.jsonl").splitlines()[0])
    assert read_json(path)["avg_ts"] == 1019.409153
    json.dumps(read_json(path))


# --- NVML without a GPU ---------------------------------------------------------------------------------


def _has_nvml() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


no_gpu = pytest.mark.skipif(_has_nvml(), reason="NVML works on this machine: the no-GPU path is not exercised")


@no_gpu
def test_gpu_info_without_gpu():
    info = nvml.gpu_info()
    assert info["available"] is False
    assert info["reason"].startswith("no GPU")
    assert "NVML" in info["reason"]
    assert info["gpus"] == []
    json.dumps(info)


@no_gpu
def test_vram_sampler_without_gpu():
    with nvml.VramSampler(interval_s=0.01) as s:
        pass
    r = s.result
    assert r.available is False
    assert r.reason.startswith("no GPU")
    assert r.peak_delta_mib is None and r.samples == 0
    d = r.to_dict()
    assert d["available"] is False and d["reason"] == r.reason


@no_gpu
def test_vram_sampler_does_not_swallow_the_tools_error():
    # a failing tool inside the sampler still fails the job, and the sampler still reports why it had no data
    with pytest.raises(ToolFailed, match="status 3"), nvml.VramSampler() as s:
        run_tool(["sh", "-c", "exit 3"])
    assert s.result.available is False and s.result.reason.startswith("no GPU")


def test_nvml_init_failure_is_reported_not_raised(monkeypatch):
    # the same path on any machine: NVML's library missing (what a CPU-only node without a driver gives)
    pynvml = pytest.importorskip("pynvml")

    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    info = nvml.gpu_info()
    assert info["available"] is False
    assert info["reason"].startswith("no GPU: NVML unavailable (NVMLError_LibraryNotFound")
    with nvml.VramSampler() as s:
        pass
    assert s.result.available is False
    assert s.result.reason == info["reason"]
