"""Running tools with real processes (exit statuses, signals, missing binaries, the log), and started(), the one
way a tool process is started: output streamed, the tool stopped (SIGTERM, then SIGKILL) and reaped however the
caller's block ends."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp.run import ToolRun, last_lines, run_tool, started


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


@pytest.mark.faults
def test_killed_by_sigkill(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(ToolFailed) as ei:
        run_tool(["sh", "-c", "kill -9 $$"], log)
    msg = str(ei.value)
    assert "killed by SIGKILL" in msg
    assert "out of memory?" in msg  # the OOM killer's signal gets the hint
    assert "# exit status -9," in log.read_text()


@pytest.mark.faults
def test_killed_by_sigterm_has_no_oom_hint():
    with pytest.raises(ToolFailed) as ei:
        run_tool(["sh", "-c", "kill -TERM $$"])
    msg = str(ei.value)
    assert "killed by SIGTERM" in msg
    assert "out of memory" not in msg


@pytest.mark.faults
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


# started(): the one way a tool process is started (run_tool and the server check use it) ------------------------

def _gone(pid: int) -> bool:
    """Reaped: no process, not even a zombie, has this pid."""
    return not Path(f"/proc/{pid}").exists()


def _wait_for_line(tool, line: str, seconds: float = 10) -> None:
    end = time.monotonic() + seconds
    while line not in tool.output():
        assert time.monotonic() < end, f"{line!r} never came; output: {tool.output()!r}"
        time.sleep(0.02)


def test_started_streams_output_and_stops_the_tool_at_the_end(tmp_path):
    log = tmp_path / "job.log"
    with started(["sh", "-c", "echo ready; exec sleep 60"], log) as tool:
        _wait_for_line(tool, "ready\n")
        assert tool.poll() is None and tool.output() == "ready\n" and tool.name == "sh"
        tool.note("the caller's own line")
        pid = tool.pid
    assert tool.returncode == -signal.SIGTERM and _gone(pid)
    assert log.read_text().splitlines() == ["$ sh -c 'echo ready; exec sleep 60'", "ready", "# the caller's own line",
                                            f"# stopped: exit status -15, {tool.wall_seconds:.1f} s"]


@pytest.mark.faults
def test_started_stops_the_tool_when_the_block_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt), started(["sleep", "60"], tmp_path / "job.log") as tool:
        raise KeyboardInterrupt
    assert tool.returncode == -signal.SIGTERM and _gone(tool.pid)
    assert "# stopped: exit status -15," in (tmp_path / "job.log").read_text()


@pytest.mark.faults
def test_a_tool_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
             "time.sleep(60)"
    t0 = time.monotonic()
    with started([sys.executable, "-c", ignore], tmp_path / "job.log", grace_s=0.5) as tool:
        _wait_for_line(tool, "ready\n")
    assert tool.returncode == -signal.SIGKILL and _gone(tool.pid)
    assert time.monotonic() - t0 < 10


def test_a_tool_that_ended_by_itself_is_reaped_and_its_status_logged(tmp_path):
    with started(["sh", "-c", "echo done; exit 4"], tmp_path / "job.log") as tool:
        assert tool.wait() == 4 and tool.output() == "done\n"
    assert tool.returncode == 4
    assert (tmp_path / "job.log").read_text().splitlines()[-1].startswith("# exit status 4, ")


def test_last_lines():
    assert last_lines("a\nb\nc\nd\ne\nf\ng\n\n") == "c\nd\ne\nf\ng"
    assert last_lines("one\ntwo\n", 1) == "two" and last_lines("") == ""
