"""The echo upstream (devas/echo.py): answers every request with what it received, and keeps a log."""

from __future__ import annotations

import requests

from support.devas import DEVAS_DIR
from support.processes import PYTHON, Service


class Echo(Service):
    def __init__(self, port: int = 0):
        super().__init__([PYTHON, "-m", "devas.echo", "--port", str(port), "--quiet"], ready="echo ready",
                         cwd=DEVAS_DIR)
        self.port = int(self.field("port"))
        self.base = f"http://127.0.0.1:{self.port}"

    def log(self) -> list[dict]:
        return requests.get(f"{self.base}/_echo/log", timeout=5).json()

    def reset(self) -> None:
        requests.post(f"{self.base}/_echo/reset", timeout=5).raise_for_status()
