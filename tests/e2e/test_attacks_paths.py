"""End to end, attacks on path matching: the filter (built .wasm) in
real Envoy, the development AS and the echo upstream.

- Matching cost: a 58 kB path of 29,000 segments made the matcher hash every shorter prefix (~190 ms
  of worker CPU each); a few in parallel stalled the worker for every other request.
- Encoded reserved characters: a percent-encoded sub-delimiter, `:` or `@` kept the request from matching the
  resource spelled with the plain character, and the upstream, which decodes escapes, served it.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.devas import ALL_SCOPES, DevAs
from support.echo import Echo
from support.envoy import Envoy, filter_config
from support.uma_client import parse_challenge, raw_request



ALICE_MAIL = "/users/alice@example.com"
# Every sub-delimiter RFC 3986 allows raw in a path, and `:` and `@` (`;` aside: refused).
PLAIN = "!$&'()*+,=:@"
SUBS = f"/subs/a{PLAIN}z"
RESOURCES = [
    {"id": "res-alice", "uri": ALICE_MAIL},
    {"id": "res-bob", "uri": SUBS},
]
# `GET /zzz` followed by `/a` x 29,000: 58,004 bytes, under Envoy's default limit on a request's
# headers (`max_request_headers_kb`: 60 KiB, the request line included).
ATTACK_PATH = "/zzz" + "/a" * 29_000


class Stack:
    def __init__(self, as_: DevAs, echo: Echo, envoy: Envoy):
        self.as_, self.echo, self.envoy = as_, echo, envoy

    def request(self, path: str, token: str | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        headers = [("Authorization", f"Bearer {token}")] if token else []
        return raw_request(self.envoy.port, method, path, headers)

    def rpt(self, resource_id: str) -> str:
        return self.as_.mint_rpt("alice-0001", [{"resource_id": resource_id, "resource_scopes": ALL_SCOPES}])

    def permission_resources(self) -> list[str]:
        return [p["resource_id"] for c in self.as_.calls("permission") for p in json.loads(c["body"])]


@pytest.fixture(scope="module")
def stack(envoy_factory, uma2_as, echo) -> Stack:
    config = filter_config(uma2_as, resources=RESOURCES, local_jwt_validation=False)
    # conftest resets the AS and the echo before each test (they are in every test's fixtures).
    return Stack(uma2_as, echo, envoy_factory(config, uma2_as.port, echo.port))


def assert_challenged_for(stack: Stack, status: int, headers: dict, resource_id: str) -> None:
    assert status == 401, (status, headers)
    assert parse_challenge(headers["www-authenticate"])["ticket"]
    assert stack.permission_resources() == [resource_id]
    assert stack.echo.log() == []


# ---- percent-encoded reserved characters ---------------------------------------------

@pytest.mark.parametrize("path", [
    "/users/alice%40example.com/doc",
    "/users/alice%40example.com",
    "/users/alice%40example%2ecom/doc",
    "/users/alice@example.com/doc",
])
def test_an_encoded_at_is_the_resource_spelled_with_at(stack: Stack, path: str):
    status, headers, _ = stack.request(path)
    assert_challenged_for(stack, status, headers, "res-alice")


@pytest.mark.parametrize("char", list(PLAIN))
@pytest.mark.parametrize("case", [str.upper, str.lower])
def test_each_encoded_sub_delimiter_colon_and_at_matches_its_plain_spelling(stack: Stack, char: str, case):
    escaped = case(f"%{ord(char):02X}")
    path = SUBS.replace(char, escaped, 1) + "/doc"
    assert escaped in path
    status, headers, _ = stack.request(path)
    assert_challenged_for(stack, status, headers, "res-bob")


def test_what_is_matched_is_what_is_forwarded(stack: Stack):
    rpt = stack.rpt("res-alice")
    status, _, body = stack.request("/users/alice%40example.com/doc?who=a%40b", token=rpt)
    assert status == 200, body
    # The path is the matched one, decoded; the query is not the PEP's to touch.
    assert json.loads(body)["path"] == "/users/alice@example.com/doc?who=a%40b"
    status, _, body = stack.request("/subs/a%21%24%26%27%28%29%2A%2B%2C%3D%3A%40z", token=stack.rpt("res-bob"))
    assert status == 200, body
    assert json.loads(body)["path"] == SUBS


@pytest.mark.parametrize("path", [
    "/users/alice%3Bx@example.com/doc", "/users/alice@example.com%3bjsessionid=1/doc",
    "/users/alice@example.com%2Fdoc", "/users/alice@example.com%5cdoc",
])
def test_encoded_semicolon_and_separators_are_400(stack: Stack, path: str):
    status, _, _ = stack.request(path)
    assert status == 400
    assert stack.echo.log() == []
    assert stack.as_.calls("permission") == []


def test_an_encoded_percent_is_not_decoded_twice(stack: Stack):
    # `%2540` is `%40` after one decoding: not the resource, and forwarded exactly as it is.
    status, _, body = stack.request("/users/alice%2540example.com/doc")
    assert status == 200, body
    assert json.loads(body)["path"] == "/users/alice%2540example.com/doc"
    assert stack.as_.calls("permission") == []


# ---- matching cost ---------------------------------------------------------------------

def test_the_long_path_is_matched_and_forwarded(stack: Stack):
    status, _, body = stack.request(ATTACK_PATH)
    assert status == 200, body[:200]
    assert json.loads(body)["path"] == ATTACK_PATH
    stack.echo.reset()
    status, headers, _ = stack.request(ALICE_MAIL + "/a" * 29_000)
    assert_challenged_for(stack, status, headers, "res-alice")


def test_long_paths_in_parallel_do_not_stall_other_requests(stack: Stack):
    """Eight connections send a 58 kB path over and over while another one sends a normal,
    protected request: on one worker, each long path cost ~190 ms of matching before, so the
    normal request waited behind them for up to 1.5 s; now matching is linear in the path."""
    rpt = stack.rpt("res-alice")
    normal = ALICE_MAIL + "/doc"
    assert stack.request(normal, token=rpt)[0] == 200  # the RPT's introspection is cached now
    stop = threading.Event()
    sent: list[int] = []

    # Matched under the resource, with a method that has no scope: a 405 from the filter
    # itself, so what the long paths cost is the filter's work (no AS, no upstream).
    long_path = ALICE_MAIL + "/a" * 29_000

    def hammer() -> None:
        while not stop.is_set():
            status, _, _ = stack.request(long_path, method="PROPFIND")
            sent.append(status)

    latencies: list[float] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(hammer) for _ in range(8)]
        try:
            time.sleep(0.3)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                start = time.monotonic()
                status, _, body = stack.request(normal, token=rpt)
                latencies.append(time.monotonic() - start)
                assert status == 200, body
                time.sleep(0.05)
        finally:
            stop.set()
            for f in futures:
                f.result(timeout=30)
    assert sent and all(s == 405 for s in sent), sorted(set(sent))
    assert len(sent) >= 16, f"only {len(sent)} long paths were sent"
    latencies.sort()
    print(f"{len(sent)} long paths; normal requests: {len(latencies)}, median "
          f"{latencies[len(latencies) // 2] * 1000:.1f} ms, slowest {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 1.0, f"slowest normal request {latencies[-1]:.3f}s; median {latencies[len(latencies) // 2]:.3f}s"
    assert stack.envoy.alive()
