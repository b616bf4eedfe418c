"""HTTP plumbing shared by the development AS and the echo upstream (development/test fixture,
NOT for production): request/response values, typed HTTP errors, a keep-alive-correct
HTTP/1.1 handler on `ThreadingHTTPServer`, and a handle to run a server in a thread.

Envoy keeps upstream connections open and reuses them, so every response carries a
Content-Length (except 1xx/204/304, which must not), request bodies are always consumed in
full (Content-Length or chunked), and `stop()` closes the kept-alive connections too: a stopped
server must not keep answering on a pooled connection.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import socketserver
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote_plus, urlsplit

JSON_TYPE = "application/json"
NO_BODY_STATUSES = (204, 304)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode(),
                    {"Content-Type": JSON_TYPE, **(headers or {})})


def empty_response(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, b"", dict(headers or {}))


class HttpError(Exception):
    """Raised anywhere in a handler to answer with `response` instead."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


class DropConnection(Exception):
    """Raised to close the TCP connection without answering (fault injection)."""


class BadRequestBody(ValueError):
    pass


class Request:
    """One parsed HTTP request. Header names are lowercased; repeated headers keep every value."""

    def __init__(self, method: str, target: str, header_pairs: list[tuple[str, str]], body: bytes,
                 remote_addr: str = "127.0.0.1"):
        self.method = method
        self.remote_addr = remote_addr
        self.target = target
        parts = urlsplit(target)
        self.path = parts.path
        self.query_string = parts.query
        self.query = parse_qs(parts.query, keep_blank_values=True)
        self.header_values: dict[str, list[str]] = {}
        for name, value in header_pairs:
            self.header_values.setdefault(name.lower(), []).append(value)
        self.body = body
        self._form: dict[str, list[str]] | None = None

    def header(self, name: str) -> str | None:
        values = self.header_values.get(name.lower())
        return values[0] if values else None

    def headers_for_log(self) -> dict[str, str | list[str]]:
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.header_values.items()}

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def query1(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def form(self) -> dict[str, list[str]]:
        if self._form is None:
            self._form = parse_qs(self.text(), keep_blank_values=True)
        return self._form

    def form1(self, name: str) -> str | None:
        values = self.form().get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body as JSON; raises BadRequestBody when it is not."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequestBody(str(exc)) from exc

    def _auth(self, scheme: str) -> str | None:
        value = self.header("authorization")
        if not value:
            return None
        given, _, rest = value.strip().partition(" ")
        if given.lower() != scheme.lower():
            return None
        return rest.strip() or None

    def bearer(self) -> str | None:
        return self._auth("Bearer")

    def basic_credentials(self) -> tuple[str, str] | None:
        """RFC 6749 §2.3.1: id and secret are form-encoded before the base64 step."""
        raw = self._auth("Basic")
        if raw is None:
            return None
        try:
            decoded = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, secret = decoded.partition(":")
        if not sep:
            return None
        return unquote_plus(user), unquote_plus(secret)


class App(Protocol):
    def handle(self, request: Request) -> Response: ...


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devas"
    sys_version = ""
    server: "FixtureServer"

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.untrack(self.connection)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError as exc:
                    raise BadRequestBody("bad chunk size") from exc
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError as exc:
            raise BadRequestBody("bad Content-Length") from exc
        if n < 0:
            raise BadRequestBody("bad Content-Length")
        return self.rfile.read(n)

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except BadRequestBody:
            self.close_connection = True
            self._write(self.command, json_response(400, {"error": "invalid_request"}))
            return
        request = Request(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
        try:
            response = self.server.app.handle(request)
        except DropConnection:
            self._log(request, "dropped")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except Exception:  # a fixture bug must show up as a 500, not kill the connection silently
            traceback.print_exc(file=sys.stderr)
            response = json_response(500, {"error": "server_error"})
        self._write(request.method, response)
        self._log(request, str(response.status))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler answers 501 for a method without a `do_<METHOD>`. A server that
        # takes any method (the echo: WebDAV's PROPFIND, MKCOL, VERSION-CONTROL, ...) serves them all.
        if name.startswith("do_") and self.__dict__.get("server") is not None and self.server.any_method:
            return self._serve
        raise AttributeError(name)

    def _write(self, method: str, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        has_body = response.status >= 200 and response.status not in NO_BODY_STATUSES
        if has_body:
            self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if has_body and method != "HEAD":
            self.wfile.write(response.body)

    def _log(self, request: Request, outcome: str) -> None:
        # Path only: query strings and bodies may carry tokens, which are never logged.
        if self.server.log_requests:
            sys.stderr.write(f"{self.server.log_prefix}: {request.method} {request.path} -> {outcome}\n")

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # replaced by _log

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            sys.stderr.write(f"{self.server.log_prefix}: {format % args}\n")


class FixtureServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a burst of new upstream connections from several
    # Envoy workers overflows it, and the dropped SYNs come back 1-3 s later (seen as AS timeouts).
    request_queue_size = 1024
    # Serve every request method, not only the seven above (the echo upstream).
    any_method = False

    def __init__(self, host: str, port: int, log_prefix: str, log_requests: bool):
        self.app: App | None = None
        self.log_prefix = log_prefix
        self.log_requests = log_requests
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), slow or hanging in sandboxes.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns, self._connections = list(self._connections), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ServerHandle:
    """A server running in a daemon thread: `.host`, `.port` (the bound one), `.url`, `.stop()`."""

    def __init__(self, server: FixtureServer):
        self._server = server
        self.host = server.server_address[0]
        self.port = server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"{server.log_prefix}-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_forever(handle: ServerHandle) -> None:
    """Blocks the CLI's main thread until SIGINT/SIGTERM, then stops the server."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    handle.stop()
