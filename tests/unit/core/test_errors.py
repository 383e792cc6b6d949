"""core.errors: what a failed tool keeps for its caller, and the hierarchy the callers catch by."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ConfigError, DoesNotFit, GgufbenchError, ToolFailed
from ggufbench.llamacpp.oom import memory_failure
from tests.support import DATA

SERVER_OOM = DATA / "cuda-h200-oom" / "server_all_gpu.err"  # llama-server out of device memory, as it printed


def test_tool_failed_keeps_output_and_returncode():
    text = SERVER_OOM.read_text()
    e = ToolFailed("llama-server did not start", text, 1)
    assert str(e) == "llama-server did not start"
    assert e.output == text and e.returncode == 1
    bare = ToolFailed("llama-tokenize printed no [ids] list")
    assert bare.output == "" and bare.returncode is None


def test_does_not_fit_is_caught_as_a_tool_failure_with_its_reason():
    """measure/speed.py's pattern: a ToolFailed's output read for a memory failure, re-raised as DoesNotFit."""
    text = SERVER_OOM.read_text()
    with pytest.raises(ToolFailed) as ei:
        try:
            raise ToolFailed("llama-bench exited 1", text, 1)
        except ToolFailed as e:
            why = memory_failure(e.output)
            assert why is not None
            raise DoesNotFit(why, e.output, e.returncode) from e
    e = ei.value
    assert type(e) is DoesNotFit and isinstance(e, GgufbenchError)
    assert "cudaMalloc of 2442.40 MiB on device 0 failed" in str(e)
    assert e.output == text and e.returncode == 1 and isinstance(e.__cause__, ToolFailed)


def test_config_error_is_not_a_tool_failure():
    assert issubclass(ConfigError, GgufbenchError) and not issubclass(ConfigError, ToolFailed)
    assert not issubclass(ToolFailed, DoesNotFit)
    with pytest.raises(GgufbenchError):  # what the CLIs catch to print "error: ..." and exit 2
        raise ConfigError("models.qwen.quants: empty")
