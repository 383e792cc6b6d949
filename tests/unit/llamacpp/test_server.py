"""llamacpp.server.check: start the command on a free loopback port, poll /health through its 503s, one
/completion, stop it; an exit while loading is read from its output (real llama-server lines in
tests/data/cuda-h200-oom). The server is a stand-in program speaking llama-server's HTTP API (http.server)."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import pytest

from ggufbench.core.errors import DoesNotFit, ToolFailed
from ggufbench.llamacpp.server import check
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
print("main: server is listening on", port, flush=True)

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
        self.send(200, {"status": "ok"})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print("completion", json.dumps(body, sort_keys=True), flush=True)
        self.send(200, reply)

HTTPServer(("127.0.0.1", port), H).serve_forever()
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
    r = check(program(tmp_path, SERVER), ["-m", "m.gguf", "--loading", "3"], "Hello", 8, 20, log)
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
        check(replay(tmp_path, OOM / "server_all_gpu.err"), ["-ngl", "99"], "Hello", 8, 20, tmp_path / "s.log")
    e = ei.value
    assert str(e) == "cudaMalloc of 2442.40 MiB on device 0 failed: out of memory while loading the model"
    assert e.returncode == 1 and "exiting due to model loading error" in e.output
    assert not e.output.startswith("$ ")  # this run's output only, not the log's command line


@pytest.mark.parametrize("printed, why", [
    ("error: unknown value for --cache-type-k: q9_0\n", "it refused an argument"),
    ("couldn't bind HTTP server socket, hostname: 127.0.0.1\n", "its port was taken"),
    ("srv  llama_server: exiting due to model loading error\n", "it could not load the model"),
    ("Segmentation fault\n", "it exited with status 3"),
])
def test_other_exits_say_why(tmp_path, printed, why):
    tool = program(tmp_path, f"import sys\nprint({printed!r}, end='')\nsys.exit(3)\n")
    with pytest.raises(ToolFailed) as ei:
        check(tool, [], "Hello", 8, 20, tmp_path / "s.log")
    assert type(ei.value) is ToolFailed and ei.value.returncode == 3
    assert str(ei.value).startswith(f"llama-server did not start: {why}; last lines:\n")
    assert printed.strip() in str(ei.value)


def test_never_healthy_times_out_and_is_stopped(tmp_path):
    log = tmp_path / "s.log"
    with pytest.raises(ToolFailed, match=r"did not answer /health within 1 s"):
        check(program(tmp_path, SERVER), ["--loading", "1000000"], "Hello", 8, 1, log)
    port = int(log.read_text().split("--port ", 1)[1].split()[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_reply_without_generation_fails(tmp_path):
    empty = '{"content": "", "timings": {"predicted_n": 0}}'
    with pytest.raises(ToolFailed, match="answered /completion without generating anything"):
        check(program(tmp_path, SERVER), ["--reply", empty], "Hello", 8, 20, tmp_path / "s.log")


SAY = '''        print(open(args[args.index("--say") + 1]).read(), flush=True)
        self.send(500, {"error": {"code": 500, "message": "Compute error."}})'''
FAILING_COMPLETION = SERVER.replace('''        self.send(200, reply)''', SAY)


def test_a_completion_that_fails_for_memory_does_not_fit(tmp_path):
    """Started, then out of memory at the first generation (the server prints llama.cpp's real OOM lines):
    a "does not fit", not a crashed job."""
    tool = program(tmp_path, FAILING_COMPLETION)
    with pytest.raises(DoesNotFit):
        check(tool, ["-m", "m.gguf", "--say", str(OOM / "server_all_gpu.err")], "Hi", 8, 20, tmp_path / "s.log")


def test_a_completion_that_fails_otherwise_names_the_http_error(tmp_path):
    (tmp_path / "other.txt").write_text("decode: failed to decode the batch\n")
    tool = program(tmp_path, FAILING_COMPLETION)
    with pytest.raises(ToolFailed, match=r"started but its /completion failed \(HTTPError: HTTP Error 500") as e:
        check(tool, ["-m", "m.gguf", "--say", str(tmp_path / "other.txt")], "Hi", 8, 20, tmp_path / "s.log")
    assert not isinstance(e.value, DoesNotFit)
