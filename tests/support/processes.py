"""Child processes, ports and waiting: what every other harness module builds on."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    """A port free now. Another process may take it before the caller binds it, so prefer a
    server's own `--port 0` when it has one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Service:
    """A child process that prints a line containing `ready` on stdout once it serves. Its
    output (stderr merged) is read on a thread into `lines` from the start, so the child never
    blocks on a full pipe and a child that prints nothing still times out."""

    def __init__(self, args: list[str], ready: str, cwd: Path | None = ROOT, env: dict | None = None,
                 timeout: float = 20.0):
        self.args = args
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[str] = []
        self.ready_line = ""
        self._ready = ready
        self._done = threading.Event()  # set on the ready line or at end of output
        threading.Thread(target=self._read, daemon=True).start()
        if not self._done.wait(timeout) or not self.ready_line:
            self.stop()
            state = "exited" if self.proc.poll() is not None else f"not ready in {timeout}s"
            raise RuntimeError(f"{args[:3]} {state} before it was ready: {self.output()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if not self.ready_line and self._ready in line:
                self.ready_line = line.strip()
                self._done.set()
        self._done.set()

    def field(self, name: str) -> str:
        """`value` of `name=value` in the ready line."""
        for word in self.ready_line.split():
            key, _, value = word.partition("=")
            if key == name:
                return value
        raise AssertionError(f"no {name}= in {self.ready_line!r}")

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        stop_process(self.proc)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def poll_until(url: str, status: int, timeout: float = 10.0, **kw) -> requests.Response:
    """GETs `url` until it answers `status` (an AS coming back, say), at most `timeout` seconds;
    the last answer either way."""
    deadline = time.time() + timeout
    while True:
        resp = requests.get(url, timeout=5, **kw)
        if resp.status_code == status or time.time() > deadline:
            return resp
        time.sleep(0.3)
