"""llama-server: the command a recommendation stands for, and the proof that it starts.

A check starts the exact command on 127.0.0.1 (a free port), waits for GET /health to answer
{"status": "ok"}, sends one POST /completion, records the load time, the server's own timings (tokens/s of the
prompt and of generation) and the peak device memory (NVML), and stops it. A server that exits while loading
for lack of device memory "does not fit" (oom.py reads its log); any other exit is a failure with its reason.

The answers must come from the process the check started (issue 25: a llama-server already listening on the
port that was picked answered for it). Before /health counts, every socket listening on the port belongs to
that process or its children (Linux: /proc/net/tcp* and /proc/PID/fd); its own output shows the model loaded
and the server listening on that port; GET /props names the model file that was asked for. A port taken between
picking it and llama-server's bind ("couldn't bind HTTP server socket") is tried again on another port.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DoesNotFit, ToolFailed
from .nvml import VramSampler
from .oom import memory_failure
from .run import RunningTool, last_lines, started

HOST = "127.0.0.1"
POLL_S = 0.25
PORT_TRIES = 3          # a port taken between free_port() and llama-server's bind: started again on another one
LOG_WAIT_S = 10.0       # /health can answer a moment before the server logs "model loaded" and where it listens
STOP_GRACE_S = 30.0     # SIGTERM, then this long before SIGKILL (a graceful llama-server stops in well under that)
LISTEN = "0A"           # TCP_LISTEN in /proc/net/tcp's st column

# Why llama-server exited, from its own last lines (tests/data/cuda-h200-oom/server_*.err): most specific first.
BIND_FAILED = "couldn't bind HTTP server socket"
_EXITS = [
    ("exiting due to model loading error", "it could not load the model"),
    (BIND_FAILED, "its port was taken"),
    ("invalid argument", "it refused an argument"),
    ("error: unknown value for", "it refused an argument"),
]

# What a started llama-server prints once it serves: 0c1e570 (run here) "srv  llama_server: model loaded" then
# "srv  llama_server: listening on http://127.0.0.1:PORT"; a 2025 one (its tools/server/server.cpp, read) "main: model
# loaded" then "main: server is listening on http://127.0.0.1:PORT - starting the main loop". /health answers a
# moment before these lines. Both have GET /props with "model_path", the -m value as given.
_LOADED = re.compile(r"\bmodel loaded\b")


class PortTaken(ToolFailed):
    """llama-server could not bind its port: another process had it (the check tries another port)."""


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


def _try_get(url: str) -> tuple[int | None, str]:
    try:
        return _get(url)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None, ""


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


# Who listens on a port (Linux /proc; elsewhere None: "cannot tell") -------------------------------------------

def _reaches_host(hexaddr: str) -> bool:
    """Whether a listener bound to this /proc/net/tcp* address (u32 words in host byte order) gets connections
    to HOST: HOST itself, the wildcard, or HOST as an IPv4-mapped IPv6 address."""
    raw = b"".join(int(hexaddr[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hexaddr), 8))
    ip = ipaddress.ip_address(raw)
    host = ipaddress.ip_address(HOST)
    return ip.is_unspecified or ip == host or getattr(ip, "ipv4_mapped", None) == host


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on HOST:port (tcp and tcp6); None where /proc/net/tcp cannot be read."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].is_file():
        return None
    inodes = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            addr, _, hexport = f[1].partition(":")
            if f[3] == LISTEN and int(hexport, 16) == port and _reaches_host(addr):
                inodes.add(f[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or not ours to read
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _family(pid: int) -> list[int]:
    """pid and its descendants (a wrapper script's llama-server holds the port for it)."""
    pids, i = [pid], 0
    while i < len(pids):
        for kids in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(k) for k in kids.read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def _owned_by(pid: int, port: int) -> bool | None:
    """True when something listens on HOST:port and every such socket belongs to pid or its descendants; None
    where /proc cannot tell."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    ours = set().union(*(_socket_inodes(p) for p in _family(pid)))
    return bool(inodes) and inodes <= ours


def holders(port: int) -> str:
    """Who listens on HOST:port, in words: 'pid 123 (llama-server)', 'nothing listens there now', or that /proc
    cannot tell."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return "no /proc here to tell which process"
    if not inodes:
        return "nothing listens there now"
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _socket_inodes(int(proc.name)) & inodes:
            try:
                comm = (proc / "comm").read_text().strip()
            except OSError:
                comm = "?"
            found.append(f"pid {proc.name} ({comm})")
    return "held by " + (", ".join(found) if found else "a process this user cannot see")


# The check ----------------------------------------------------------------------------------------------------

@dataclass
class _Start:
    """What waiting for /health found."""
    health: str | None = None      # the body of our process's first 200
    load_s: float = 0.0
    exited: bool = False           # it exited by itself before answering
    impostor: bool = False         # a 200 came from a process that is not ours
    listener: str = "not checked"
    log_lines: list[str] = field(default_factory=list)


def _log_proof(text: str, port: int) -> list[str]:
    """Our process's own lines saying it loaded the model and listens on HOST:port; [] until both are there."""
    listening = re.compile(rf"listening on https?://\S+:{port}\b")
    loaded = [line for line in text.splitlines() if _LOADED.search(line)]
    where = [line for line in text.splitlines() if listening.search(line)]
    return [loaded[-1].strip(), where[-1].strip()] if loaded and where else []


def _wait_healthy(tool: RunningTool, port: int, timeout_s: float) -> _Start:
    """Poll /health until our process answers 200 (the port's listener is its; without /proc, its log says it
    listens there), it exits, or timeout_s passes."""
    start, t0 = _Start(), time.monotonic()
    while time.monotonic() - t0 < timeout_s and tool.poll() is None:
        status, body = _try_get(f"http://{HOST}:{port}/health")
        if status == 200:
            owned = _owned_by(tool.pid, port)
            if owned or (owned is None and _log_proof(tool.output(), port)):
                start.health = body
                start.listener = f"pid {tool.pid} (started by the check)" if owned else "not checked (no /proc)"
                break
            if owned is False and not start.impostor:
                start.impostor = True
                tool.note(f"/health on port {port} answered by another process ({holders(port)}): not counted")
        time.sleep(POLL_S)
    start.load_s = time.monotonic() - t0
    start.exited = start.health is None and tool.poll() is not None
    return start


def _prove(tool: RunningTool, port: int, start: _Start, model: str | None) -> str | None:
    """Its log shows the model loaded and the server listening on port (waited for a moment: /health can answer
    just before those lines), and /props names the model asked for. Returns the model path it serves."""
    end = time.monotonic() + LOG_WAIT_S
    start.log_lines = _log_proof(tool.output(), port)
    while not start.log_lines and time.monotonic() < end and tool.poll() is None:
        time.sleep(POLL_S / 5)
        start.log_lines = _log_proof(tool.output(), port)
    if not start.log_lines:
        raise ToolFailed(f"llama-server answered /health on port {port}, but its own output does not show the model "
                         f"loaded and the server listening on that port ('model loaded', 'listening on "
                         f"http://{HOST}:{port}'); last lines:\n{last_lines(tool.output())}", tool.output())
    if model is None:
        return None
    status, body = _try_get(f"http://{HOST}:{port}/props")
    served = _json_or_text(body).get("model_path") if status == 200 else None
    if not served or os.path.realpath(served) != os.path.realpath(model):
        raise ToolFailed(f"llama-server on port {port} does not serve the model asked for: -m {model}, but GET /props "
                         f"answered {status} with model_path {served!r}")
    return served


def _asked_model(args: list[str]) -> str | None:
    for flag in ("-m", "--model"):
        if flag in args[:-1]:
            return args[args.index(flag) + 1]
    return None


def _not_started(tool: RunningTool, start: _Start, port: int, timeout_s: float, log) -> None:
    """Raise why a server that never answered as ours did not start."""
    text, rc = tool.output(), tool.returncode
    others = f"; another process answered on its port {port} ({holders(port)})" if start.impostor else ""
    if not start.exited:
        raise ToolFailed(f"llama-server did not answer /health within {timeout_s:.0f} s{others} (see {log})", text)
    why = memory_failure(text)
    if why:
        raise DoesNotFit(why, text, rc)
    if BIND_FAILED in text:
        raise PortTaken(f"port {port}: {holders(port)}", text, rc)
    raise ToolFailed(f"llama-server did not start: {_exit_reason(text, rc)}{others}; last lines:\n{last_lines(text)}",
                     text, rc)


def _attempt(cmd: list[str], port: int, request: dict, timeout_s: float, log) -> dict:
    """One start of cmd on port: proven, asked one completion, stopped."""
    failed = served = reply = None
    with VramSampler() as vram, started(cmd, log, grace_s=STOP_GRACE_S) as tool:
        start = _wait_healthy(tool, port, timeout_s)
        if start.health is not None:
            served = _prove(tool, port, start, _asked_model(cmd))
            try:
                reply = _post(f"http://{HOST}:{port}/completion", request, timeout_s)
            except (urllib.error.URLError, OSError, ValueError) as e:  # HTTPError, timeouts, not JSON
                failed = f"{type(e).__name__}: {e}"
    text = tool.output()
    if start.health is None:
        _not_started(tool, start, port, timeout_s, log)
    if failed:  # it started, then failed its first completion: out of memory there is a result too
        why = memory_failure(text)
        if why:
            raise DoesNotFit(why, text, tool.returncode)
        raise ToolFailed(f"llama-server started but its /completion failed ({failed}); last lines of {log}:\n"
                         f"{last_lines(text)}", text, tool.returncode)
    timings = reply.get("timings") or {}
    if not reply.get("content") and not timings.get("predicted_n"):
        raise ToolFailed(f"llama-server answered /completion without generating anything: {str(reply)[:300]}")
    return {"cmd": cmd, "load_seconds": round(start.load_s, 3), "health": _json_or_text(start.health),
            "prompt_per_second": timings.get("prompt_per_second"),
            "predicted_per_second": timings.get("predicted_per_second"),
            "prompt_n": timings.get("prompt_n"), "predicted_n": timings.get("predicted_n"),
            "content": reply.get("content", "")[:200], "vram": vram.result.to_dict(),
            "proof": {"port": port, "pid": tool.pid, "listener": start.listener, "log": start.log_lines,
                      "model_path": served}}


def check(server_bin: str | Path, args: list[str], log, *, prompt: str, n_predict: int, timeout_s: float) -> dict:
    """Start llama-server with args, prove the answers are its own, stop it. Raises DoesNotFit or ToolFailed.
    A port another process took first is given up for a new one, PORT_TRIES times."""
    request = {"prompt": prompt, "n_predict": n_predict, "cache_prompt": False}
    taken: list[PortTaken] = []
    for _ in range(PORT_TRIES):
        port = free_port()
        cmd = [str(server_bin), *map(str, args), "--host", HOST, "--port", str(port)]
        try:
            return {**_attempt(cmd, port, request, timeout_s, Path(log)), "ports_taken": [str(e) for e in taken]}
        except PortTaken as e:
            taken.append(e)
    last = taken[-1]
    raise ToolFailed(f"llama-server did not start: its port was taken by another process, on each of {PORT_TRIES} "
                     f"free ports tried ({'; '.join(map(str, taken))}); last lines:\n{last_lines(last.output)}",
                     last.output, last.returncode)
