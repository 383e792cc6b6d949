"""llama-server: the command a recommendation stands for, and the proof that it starts.

A check starts the exact command on 127.0.0.1 (a free port), waits for GET /health to answer
{"status": "ok"}, sends one POST /completion, records the load time, the server's own timings (tokens/s of the
prompt and of generation) and the peak device memory (NVML), and stops it. A server that exits while loading
for lack of device memory "does not fit" (oom.py reads its log); any other exit is a failure with its reason.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..core.errors import DoesNotFit, ToolFailed
from ..core.proc import end_with_parent, tool_preexec
from .nvml import VramSampler
from .oom import memory_failure

HOST = "127.0.0.1"
POLL_S = 0.25

# Why llama-server exited, from its own last lines (tests/data/cuda-h200-oom/server_*.err): most specific first.
_EXITS = [
    ("exiting due to model loading error", "it could not load the model"),
    ("couldn't bind HTTP server socket", "its port was taken"),
    ("invalid argument", "it refused an argument"),
    ("error: unknown value for", "it refused an argument"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:  # 503 while loading
        return e.code, e.read().decode(errors="replace")


def _post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _json_or_text(body: str | None):
    try:
        return json.loads(body or "{}")
    except ValueError:
        return {"body": body[:200]}


def _exit_reason(text: str, returncode: int) -> str:
    for needle, why in _EXITS:
        if needle in text:
            return why
    return f"it exited with status {returncode}"


def check(server_bin: str | Path, args: list[str], prompt: str, n_predict: int, timeout_s: float, log) -> dict:
    """Start llama-server with args, prove it answers, stop it. Raises DoesNotFit or ToolFailed."""
    port = free_port()
    cmd = [str(server_bin), *args, "--host", HOST, "--port", str(port)]
    base = f"http://{HOST}:{port}"
    log = Path(log)
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
    start = log.stat().st_size
    with VramSampler() as vram, open(log, "ab") as out:
        t0 = time.monotonic()
        end_with_parent()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=tool_preexec)
        failed = None
        try:
            health = None
            while time.monotonic() - t0 < timeout_s:
                if proc.poll() is not None:
                    break
                try:
                    status, body = _get(f"{base}/health")
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    status, body = None, ""
                if status == 200:
                    health = body
                    break
                time.sleep(POLL_S)
            load_s = time.monotonic() - t0
            exited = proc.poll() is not None
            if health is not None:
                try:
                    reply = _post(f"{base}/completion", {"prompt": prompt, "n_predict": n_predict,
                                                         "cache_prompt": False}, timeout_s)
                except (urllib.error.URLError, OSError, ValueError) as e:  # HTTPError, timeouts, not JSON
                    failed = f"{type(e).__name__}: {e}"
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    text = log.read_bytes()[start:].decode(errors="replace")
    if health is None:
        if not exited:
            raise ToolFailed(f"llama-server did not answer /health within {timeout_s:.0f} s (see {log})", text)
        why = memory_failure(text)
        if why:
            raise DoesNotFit(why, text, proc.returncode)
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ToolFailed(f"llama-server did not start: {_exit_reason(text, proc.returncode)}; last lines:\n{tail}",
                         text, proc.returncode)
    if failed:  # it started, then failed its first completion: out of memory there is a result too
        why = memory_failure(text)
        if why:
            raise DoesNotFit(why, text, proc.returncode)
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ToolFailed(f"llama-server started but its /completion failed ({failed}); last lines of {log}:\n"
                         f"{tail}", text, proc.returncode)
    timings = reply.get("timings") or {}
    if not reply.get("content") and not timings.get("predicted_n"):
        raise ToolFailed(f"llama-server answered /completion without generating anything: {str(reply)[:300]}")
    return {"cmd": cmd, "load_seconds": round(load_s, 3), "health": _json_or_text(health),
            "prompt_per_second": timings.get("prompt_per_second"),
            "predicted_per_second": timings.get("predicted_per_second"),
            "prompt_n": timings.get("prompt_n"), "predicted_n": timings.get("predicted_n"),
            "content": reply.get("content", "")[:200], "vram": vram.result.to_dict()}
