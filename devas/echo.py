"""The echo upstream of the end-to-end tests (development/test fixture, NOT for production).

Any method on any path answers `200 application/json`
`{"method", "path" (raw, with the query), "headers" {lowercased name: value, or a list when
repeated}, "body"}` and remembers the last 1000 requests. `GET /_echo/log` returns them,
`POST /_echo/reset` forgets them. Nothing in the request changes the answer (`?status=` included):
the tests must see exactly what the filter forwarded.

CLI: `python -m devas.echo --port N [--host 127.0.0.1] [--quiet]`, prints `echo ready port=<port>`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import deque

from devas import FIXTURE_WARNING
from devas.httpcore import FixtureServer, Request, Response, ServerHandle, json_response, wait_forever

LOG_SIZE = 1000
CONTROL_PREFIX = "/_echo/"


class EchoApp:
    def __init__(self) -> None:
        self._log: deque[dict] = deque(maxlen=LOG_SIZE)
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        seen = {
            "method": request.method,
            "path": request.target,
            "headers": request.headers_for_log(),
            "body": request.text(),
        }
        with self._lock:
            self._log.append(seen)
        return json_response(200, seen)

    def _control(self, request: Request) -> Response:
        with self._lock:
            if request.path == "/_echo/log" and request.method == "GET":
                return json_response(200, list(self._log))
            if request.path == "/_echo/reset" and request.method == "POST":
                self._log.clear()
                return json_response(200, {"ok": True})
        return json_response(404, {"error": "not_found"})


class EchoHandle(ServerHandle):
    app: EchoApp


def start(port: int = 0, host: str = "127.0.0.1", log_requests: bool = False) -> EchoHandle:
    server = FixtureServer(host, port, "echo", log_requests)
    server.any_method = True
    server.app = EchoApp()
    handle = EchoHandle(server)
    handle.app = server.app
    return handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devas.echo",
                                     description=f"Echo upstream ({FIXTURE_WARNING}).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--quiet", action="store_true", help="no per-request line on stderr")
    args = parser.parse_args(argv)
    handle = start(args.port, args.host, log_requests=not args.quiet)
    sys.stderr.write(f"echo: {FIXTURE_WARNING}\n")
    print(f"echo ready port={handle.port}", flush=True)
    wait_forever(handle)


if __name__ == "__main__":
    main()
