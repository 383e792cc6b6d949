"""A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (standard library only).

Chromium reads commands from fd 3 and writes replies and events to fd 4, each a JSON text ended by a NUL byte.
No port, no websocket, nothing listening: the browser is private to the test that started it.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """$CHROMIUM, else the first of CANDIDATES on PATH (Debian's package installs /usr/bin/chromium)."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


# Quiet, offline, reproducible: no first-run UI, no component updates or background requests, fixed scale.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--no-first-run", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--remote-debugging-pipe"]


class Browser:
    def __init__(self, executable: str, user_data_dir: Path, stderr_path: Path):
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 (closed in close())
        # In the child, before exec: the pipe ends at fds 3 and 4, where --remote-debugging-pipe expects them.
        # close_fds=False keeps them open; Python opens every other descriptor non-inheritable anyway.
        def at_fds_3_and_4():
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)  # out of the way first: r or w may be 3 or 4
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)
            os.close(high_r)
            os.close(high_w)

        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                     preexec_fn=at_fds_3_and_4, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr)
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.events.put({"method": "__closed__"})
                for q in list(self._replies.values()):
                    q.put({"error": {"message": "the browser closed the pipe"}})
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        q = self._replies.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    self.events.put(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            q: queue.Queue = queue.Queue()
            self._replies[mid] = q
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply to {method} within {timeout} s") from None
        finally:
            with self._lock:
                self._replies.pop(mid, None)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 30, seen: list | None = None) -> dict:
        """The next event named method; every event read meanwhile is appended to seen."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} event within {timeout} s")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if seen is not None:
                seen.append(ev)
            if ev.get("method") == method:
                return ev
            if ev.get("method") == "__closed__":
                raise RuntimeError(f"the browser exited while waiting for {method}")

    def drain(self, seen: list, settle: float = 0.3) -> None:
        """Collect the events that arrive until none has come for `settle` seconds."""
        while True:
            try:
                seen.append(self.events.get(timeout=settle))
            except queue.Empty:
                return

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # only the browser this object started
            self.proc.wait(timeout=15)
        for fd in (self._to_child_w, self._from_child_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
