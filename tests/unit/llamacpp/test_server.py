"""llamacpp.server.check: start the command on a free loopback port, poll /health through its 503s, one
/completion, stop it; an exit while loading is read from its output (real llama-server lines in
tests/data/cuda-h200-oom). The server is a stand-in program speaking llama-server's HTTP API (http.server) and
printing what llama-server prints, or the real llama-server (llama_bin) on a synthetic model (sources/synthetic_moe.py).

Issue 25: the answers must be the started process's own. Another process listening on the port the check picked
(a stand-in or a real llama-server, the same model) is not proof: the port's listener must be the child's
(/proc), its own output must say it loaded and listens there, /props must name the model asked for."""

from __future__ import annotations

import socket
import stat
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ggufbench.core.errors import DoesNotFit, ToolFailed
from ggufbench.llamacpp import server
from ggufbench.llamacpp.run import started
from ggufbench.llamacpp.server import PORT_TRIES, check
from ggufbench.sources import synthetic_moe as synth
from tests.support import DATA

OOM = DATA / "cuda-h200-oom"

SERVER = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
loading = [int(args[args.index("--loading") + 1]) if "--loading" in args else 0]
reply = json.loads(args[args.index("--reply") + 1]) if "--reply" in args else {
    "content": " a llama", "timings": {"prompt_n": 5, "prompt_per_second": 812.5, "predicted_n": 8,
                                       "predicted_per_second": 101.25}}
model = args[args.index("-m") + 1] if "-m" in args else "models/7B/ggml-model-f16.gguf"  # llama.cpp's default
props_model = args[args.index("--props-model") + 1] if "--props-model" in args else model
print(f"srv    load_model: loading model '{model}'", flush=True)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        print("request", self.command, self.path, flush=True)
    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if loading[0] > 0:
            loading[0] -= 1
            return self.send(503, {"error": {"code": 503, "message": "Loading model"}})
        if loading[0] == 0 and "--silent" not in args:  # loaded: what 0c1e570 prints then
            loading[0] = -1
            print("srv  llama_server: model loaded", flush=True)
            print(f"srv  llama_server: listening on http://127.0.0.1:{port}", flush=True)
        if self.path == "/props":
            return self.send(200, {"model_path": props_model, "total_slots": 1})
        self.send(200, {"status": "ok"})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print("completion", json.dumps(body, sort_keys=True), flush=True)
        self.send(200, reply)

try:
    httpd = HTTPServer(("127.0.0.1", port), H)
except OSError:  # as llama-server 0c1e570 says it
    print(f"srv         start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: {port}", flush=True)
    print("srv  llama_server: exiting due to HTTP server error", flush=True)
    sys.exit(1)
httpd.serve_forever()
'''


def program(tmp_path: Path, body: str) -> Path:
    tool = tmp_path / "llama-server"
    tool.write_text(f"#!{sys.executable}\n{body}")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def replay(tmp_path: Path, err: Path, rc: int = 1) -> Path:
    """A server that prints what a real llama-server printed, then exits as it did."""
    return program(tmp_path, f"import sys\nsys.stdout.write(open({str(err)!r}).read())\nsys.exit({rc})\n")


def test_answers_after_loading_and_is_stopped(tmp_path):
    log = tmp_path / "server.log"
    r = check(program(tmp_path, SERVER), ["-m", "m.gguf", "--loading", "3"], log,
              prompt="Hello", n_predict=8, timeout_s=20)
    port = int(r["cmd"][r["cmd"].index("--port") + 1])
    assert r["cmd"][-4:] == ["--host", "127.0.0.1", "--port", str(port)]
    assert r["health"] == {"status": "ok"} and r["content"] == " a llama"
    assert (r["prompt_n"], r["prompt_per_second"], r["predicted_n"], r["predicted_per_second"]) == (5, 812.5, 8, 101.25)
    assert 0.75 <= r["load_seconds"] < 20  # three 503s, 0.25 s apart
    assert r["vram"]["available"] in (True, False) and "peak_delta_mib" in r["vram"]
    text = log.read_text()
    assert text.startswith("$ ") and text.count("request GET /health") == 4
    assert 'completion {"cache_prompt": false, "n_predict": 8, "prompt": "Hello"}' in text
    with socket.socket() as s:  # stopped: nothing listens on its port any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_out_of_memory_while_loading_does_not_fit(tmp_path):
    with pytest.raises(DoesNotFit) as ei:
        check(replay(tmp_path, OOM / "server_all_gpu.err"), ["-ngl", "99"], tmp_path / "s.log",
              prompt="Hello", n_predict=8, timeout_s=20)
    e = ei.value
    assert str(e) == "cudaMalloc of 2442.40 MiB on device 0 failed: out of memory while loading the model"
    assert e.returncode == 1 and "exiting due to model loading error" in e.output
    assert not e.output.startswith("$ ")  # this run's output only, not the log's command line


@pytest.mark.parametrize("printed, why", [
    ("error: unknown value for --cache-type-k: q9_0\n", "it refused an argument"),
    ("srv  llama_server: exiting due to model loading error\n", "it could not load the model"),
    ("Segmentation fault\n", "it exited with status 3"),
])
def test_other_exits_say_why(tmp_path, printed, why):
    tool = program(tmp_path, f"import sys\nprint({printed!r}, end='')\nsys.exit(3)\n")
    with pytest.raises(ToolFailed) as ei:
        check(tool, [], tmp_path / "s.log", prompt="Hello", n_predict=8, timeout_s=20)
    assert type(ei.value) is ToolFailed and ei.value.returncode == 3
    assert str(ei.value).startswith(f"llama-server did not start: {why}; last lines:\n")
    assert printed.strip() in str(ei.value)


def test_never_healthy_times_out_and_is_stopped(tmp_path):
    log = tmp_path / "s.log"
    with pytest.raises(ToolFailed, match=r"did not answer /health within 1 s"):
        check(program(tmp_path, SERVER), ["--loading", "1000000"], log, prompt="Hello", n_predict=8, timeout_s=1)
    port = int(log.read_text().split("--port ", 1)[1].split()[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_reply_without_generation_fails(tmp_path):
    empty = '{"content": "", "timings": {"predicted_n": 0}}'
    with pytest.raises(ToolFailed, match="answered /completion without generating anything"):
        check(program(tmp_path, SERVER), ["--reply", empty], tmp_path / "s.log",
              prompt="Hello", n_predict=8, timeout_s=20)


SAY = '''        print(open(args[args.index("--say") + 1]).read(), flush=True)
        self.send(500, {"error": {"code": 500, "message": "Compute error."}})'''
FAILING_COMPLETION = SERVER.replace('''        self.send(200, reply)''', SAY)


def test_a_completion_that_fails_for_memory_does_not_fit(tmp_path):
    """Started, then out of memory at the first generation (the server prints llama.cpp's real OOM lines):
    a "does not fit", not a crashed job."""
    tool = program(tmp_path, FAILING_COMPLETION)
    with pytest.raises(DoesNotFit):
        check(tool, ["-m", "m.gguf", "--say", str(OOM / "server_all_gpu.err")], tmp_path / "s.log",
              prompt="Hi", n_predict=8, timeout_s=20)


def test_a_completion_that_fails_otherwise_names_the_http_error(tmp_path):
    (tmp_path / "other.txt").write_text("decode: failed to decode the batch\n")
    tool = program(tmp_path, FAILING_COMPLETION)
    with pytest.raises(ToolFailed, match=r"started but its /completion failed \(HTTPError: HTTP Error 500") as e:
        check(tool, ["-m", "m.gguf", "--say", str(tmp_path / "other.txt")], tmp_path / "s.log",
              prompt="Hi", n_predict=8, timeout_s=20)
    assert not isinstance(e.value, DoesNotFit)


def test_proof_is_recorded(tmp_path):
    r = check(program(tmp_path, SERVER), ["-m", "m.gguf"], tmp_path / "s.log",
              prompt="Hello", n_predict=8, timeout_s=20)
    proof = r["proof"]
    assert proof["port"] == int(r["cmd"][-1]) and proof["listener"] == f"pid {proof['pid']} (started by the check)"
    assert proof["log"] == ["srv  llama_server: model loaded",
                            f"srv  llama_server: listening on http://127.0.0.1:{proof['port']}"]
    assert proof["model_path"] == "m.gguf" and r["ports_taken"] == []


def test_a_port_taken_at_every_bind_is_tried_again_then_named(tmp_path):
    """The stand-in says what llama-server says when its port was taken and nothing is left listening there:
    each try starts it again on another free port; after PORT_TRIES the failure says so."""
    log = tmp_path / "s.log"
    tool = program(tmp_path, "import sys\nprint(\"srv  start: couldn't bind HTTP server socket, hostname: "
                             "127.0.0.1, port: 1\")\nsys.exit(3)\n")
    with pytest.raises(ToolFailed) as ei:
        check(tool, [], log, prompt="Hello", n_predict=8, timeout_s=20)
    e = ei.value
    assert type(e) is ToolFailed and e.returncode == 3
    assert str(e).startswith(f"llama-server did not start: its port was taken by another process, on each of "
                             f"{PORT_TRIES} free ports tried (port ")
    assert "nothing listens there now" in str(e) and str(e).endswith("last lines:\n" + e.output.strip())
    ports = [line.rsplit(" ", 1)[1] for line in log.read_text().splitlines() if line.startswith("$ ")]
    assert len(ports) == PORT_TRIES


def test_a_model_other_than_the_one_asked_for_is_not_proof(tmp_path):
    log = tmp_path / "s.log"
    with pytest.raises(ToolFailed, match=r"does not serve the model asked for: -m m.gguf, but GET /props answered "
                                         r"200 with model_path 'other.gguf'"):
        check(program(tmp_path, SERVER), ["-m", "m.gguf", "--props-model", "other.gguf"], log,
              prompt="Hi", n_predict=8, timeout_s=20)
    assert "completion" not in log.read_text()  # nothing was asked of it


def test_a_server_whose_log_does_not_say_it_listens_there_is_not_proof(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "LOG_WAIT_S", 0.5)
    with pytest.raises(ToolFailed, match=r"its own output does not show the model loaded and the server listening"):
        check(program(tmp_path, SERVER), ["-m", "m.gguf", "--silent"], tmp_path / "s.log",
              prompt="Hi", n_predict=8, timeout_s=20)


# Another process on the port (issue 25) -----------------------------------------------------------------------

def _healthy(port: int, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the impostor on port {port} never answered /health")


@pytest.fixture
def impostor(tmp_path):
    """A stand-in llama-server already listening on a free port, serving the same model name: (port, tool)."""
    port = server.free_port()
    body = tmp_path / "impostor" / "llama-server"
    body.parent.mkdir()
    with started([program(body.parent, SERVER), "-m", "m.gguf", "--port", port], tmp_path / "impostor.log") as tool:
        _healthy(port)
        yield port, tool


REAL_FREE_PORT = server.free_port


def _ports(*first: int):
    """free_port() as monkeypatched: the given ports first, then real free ones."""
    queue = list(first)
    return lambda: queue.pop(0) if queue else REAL_FREE_PORT()


@pytest.mark.faults
def test_another_process_on_the_port_is_not_proof(tmp_path, monkeypatch, impostor):
    port, imp = impostor
    monkeypatch.setattr(server, "free_port", lambda: port)
    for _ in range(5):
        with pytest.raises(ToolFailed) as ei:
            check(program(tmp_path, SERVER), ["-m", "m.gguf"], tmp_path / "s.log",
                  prompt="Hello", n_predict=8, timeout_s=20)
        assert type(ei.value) is ToolFailed
        assert str(ei.value).startswith("llama-server did not start: its port was taken by another process")
        assert f"port {port}: held by pid {imp.pid} (llama-server)" in str(ei.value)
    assert "completion" not in imp.output()  # its /health answered, nothing else was asked of it
    assert "answered by another process" in (tmp_path / "s.log").read_text()


@pytest.mark.faults
def test_a_port_taken_once_is_given_up_for_another(tmp_path, monkeypatch, impostor):
    port, imp = impostor
    monkeypatch.setattr(server, "free_port", _ports(port))
    r = check(program(tmp_path, SERVER), ["-m", "m.gguf"], tmp_path / "s.log",
              prompt="Hello", n_predict=8, timeout_s=20)
    assert r["ports_taken"] == [f"port {port}: held by pid {imp.pid} (llama-server)"]
    assert r["proof"]["port"] != port and r["proof"]["pid"] != imp.pid
    assert "completion" not in imp.output()


@pytest.mark.faults
def test_without_proc_the_log_still_refuses_the_impostor(tmp_path, monkeypatch, impostor):
    """Where /proc cannot say who listens (not Linux), our process's own lines are the proof."""
    port, imp = impostor
    monkeypatch.setattr(server, "_listening_inodes", lambda port: None)
    monkeypatch.setattr(server, "free_port", _ports(port, port, port, port))
    with pytest.raises(ToolFailed, match=r"its port was taken .*port \d+: no /proc here to tell which process"):
        check(program(tmp_path, SERVER), ["-m", "m.gguf"], tmp_path / "s.log",
              prompt="Hello", n_predict=8, timeout_s=20)
    assert "completion" not in imp.output()
    r = check(program(tmp_path, SERVER), ["-m", "m.gguf"], tmp_path / "s.log",
              prompt="Hello", n_predict=8, timeout_s=20)
    assert r["proof"]["listener"] == "not checked (no /proc)" and r["proof"]["port"] != port


# The real llama-server ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(llama_src, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny-F16.gguf"
    synth.write_synthetic_moe(path, llama_src / "models" / "ggml-vocab-qwen2.gguf", n_layer=1, seed=1)
    return path


def real_args(model: Path) -> list[str]:
    return ["-m", str(model), "-c", "512", "-t", "1"]


def test_a_real_llama_server_proves_itself(llama_bin, tiny_model, tmp_path):
    log = tmp_path / "s.log"
    r = check(llama_bin / "llama-server", real_args(tiny_model), log, prompt="Hello", n_predict=4, timeout_s=120)
    proof = r["proof"]
    assert proof["listener"] == f"pid {proof['pid']} (started by the check)"
    assert proof["model_path"] == str(tiny_model) and r["predicted_n"] == 4
    assert "model loaded" in proof["log"][0] and proof["log"][1].endswith(f"listening on http://127.0.0.1:"
                                                                          f"{proof['port']}")
    assert log.read_text().splitlines()[-1].startswith("# stopped: exit status ")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", proof["port"])) != 0


@pytest.mark.faults
def test_a_real_llama_server_already_on_the_port_is_not_proof(llama_bin, tiny_model, tmp_path, monkeypatch):
    """The issue's case: a llama-server serving the same model already listens on the port the check picked. It
    used to answer for the check (5 of 5 passed); now the check's own llama-server fails to bind, and the check
    says who holds the port, never asking the other one for a completion."""
    port = server.free_port()
    with started([llama_bin / "llama-server", *real_args(tiny_model), "--port", port], tmp_path / "imp.log") as imp:
        _healthy(port)
        monkeypatch.setattr(server, "free_port", lambda: port)
        with pytest.raises(ToolFailed) as ei:
            check(llama_bin / "llama-server", real_args(tiny_model), tmp_path / "s.log",
                  prompt="Hello", n_predict=4, timeout_s=120)
        assert f"port {port}: held by pid {imp.pid} (llama-server)" in str(ei.value)
        assert "couldn't bind HTTP server socket" in ei.value.output
        monkeypatch.setattr(server, "free_port", _ports(port))
        r = check(llama_bin / "llama-server", real_args(tiny_model), tmp_path / "s.log",
                  prompt="Hello", n_predict=4, timeout_s=120)
        assert r["proof"]["port"] != port and len(r["ports_taken"]) == 1
    assert "launch_slot_" not in imp.output()  # it served no completion
