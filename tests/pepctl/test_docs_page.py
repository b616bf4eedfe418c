"""`pepctl serve`'s docs page (/docs, the seed's PEP-UC-007): the page and its assets are
served from the binary with their content types and a strict Content-Security-Policy, and in
headless Chromium the page loads without a console error or a request leaving loopback, lists
every operation of /openapi.json, and a "try it out" of GET /resources with a user's token
shows 200 and that user's resources.

Needs Debian's `chromium` (/usr/bin/chromium, or CHROMIUM_BIN) and PyPI's `playwright` (its
driver only: no `playwright install`, the browser is Debian's)."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests


CHROMIUM = Path(os.environ.get("CHROMIUM_BIN") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
METHODS = ["get", "head", "post", "put", "patch", "delete", "options", "trace"]

# The page's policy: scripts, styles, images and requests from its own origin only, no inline
# script, Trusted Types required, no framing.
CSP_DIRECTIVES = {
    "default-src": ["'none'"], "script-src": ["'self'"], "style-src": ["'self'"], "img-src": ["'self'"],
    "connect-src": ["'self'"], "base-uri": ["'none'"], "form-action": ["'none'"],
    "frame-ancestors": ["'none'"], "require-trusted-types-for": ["'script'"],
}
ASSETS = {
    "/docs": "text/html",
    "/docs/app.js": "text/javascript",
    "/docs/app.css": "text/css",
    "/docs/favicon.svg": "image/svg+xml",
}


@pytest.fixture
def docs(serve_homes, devas):
    """alice's and bob's homes from a seed file, then the server; (server, alice's token)."""
    server = serve_homes([
        {"name": "Alice home", "description": "alice's", "resource_uri": "/home/alice", "scopes": [],
         "default_owner": "alice-0001"},
        {"name": "Alice reports", "description": "alice's too", "resource_uri": "/home/alice/reports",
         "scopes": [], "default_owner": "alice-0001"},
        {"name": "Bob home", "description": "bob's", "resource_uri": "/home/bob", "scopes": [],
         "default_owner": "bob-0002"},
    ])
    return server, devas.user_token("alice")


def csp_of(value: str) -> dict[str, list[str]]:
    out = {}
    for directive in value.split(";"):
        parts = directive.split()
        if parts:
            out[parts[0]] = parts[1:]
    return out


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in METHODS if m in item}


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def test_page_and_assets_are_served_with_types_and_csp(docs):
    server, _ = docs
    for path, ctype in ASSETS.items():
        r = requests.get(server.base + path, timeout=5)
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers["Content-Type"].split(";")[0].strip() == ctype, (path, r.headers["Content-Type"])
        assert csp_of(r.headers.get("Content-Security-Policy", "")) == CSP_DIRECTIVES, (path, r.headers)
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert r.headers["X-Frame-Options"] == "DENY", path
    page = requests.get(server.base + "/docs", timeout=5).text
    # The one script is the embedded route (no inline script, no other origin).
    assert page.count("<script") == 1 and '<script src="/docs/app.js"' in page, page
    assert "http://" not in page and "https://" not in page, page
    assert requests.get(server.base + "/docs/nope.js", timeout=5).status_code == 404


def test_page_in_headless_chromium_lists_operations_and_tries_get_resources(docs, devas):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("PyPI playwright is not installed in this Python (pip install playwright==1.65.2)")
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM_BIN)")
    server, alice = docs
    started = time.time()
    doc = requests.get(server.base + "/openapi.json", timeout=5).json()
    expected = operations(doc)
    assert ("get", "/resources") in expected and len(expected) >= 8, expected
    # alice's resources, as the API itself lists them.
    direct = server.request("GET", "/resources", alice)
    assert direct.status_code == 200, direct.text
    alice_ids = {r["id"] for r in direct.json()}
    assert len(alice_ids) == 2, direct.json()

    console_errors: list[str] = []
    requested: list[str] = []
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            context = browser.new_context(service_workers="block")

            # Every request of the page is seen here; one leaving loopback is recorded and aborted.
            def route(r):
                url = r.request.url
                if url.startswith(("data:", "blob:", "about:")) or is_loopback(url):
                    r.continue_()
                else:
                    outside.append(url)
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.on("console", lambda m: console_errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: console_errors.append(f"request failed: {r.url} {r.failure}"))
            page.on("request", lambda r: requested.append(r.url))

            response = page.goto(server.base + "/docs", wait_until="load")
            assert response is not None and response.status == 200
            page.wait_for_selector("#status[data-state=ready]")

            # Every operation of the document, and nothing else.
            shown = page.eval_on_selector_all(
                "#ops section.op", "els => els.map(e => [e.dataset.method, e.dataset.path])")
            assert {tuple(x) for x in shown} == expected, (shown, expected)
            assert len(shown) == len(expected)
            for method, path in expected:
                op = page.locator(f'section.op[data-method="{method}"][data-path="{path}"]')
                assert op.locator(".method").inner_text() == method.upper()
                assert op.locator(".path").inner_text() == path
                assert op.locator(".summary").inner_text() == doc["paths"][path][method].get("summary", "")
            # Parameters (the path-level {id}, the query's path) and the body schemas, expanded.
            get_one = page.locator('section.op[data-method="get"][data-path="/resources/{id}"]')
            assert get_one.locator('.params tr[data-param="id"]').count() == 1
            get_list = page.locator('section.op[data-method="get"][data-path="/resources"]')
            assert get_list.locator('.params tr[data-param="path"]').count() == 1
            post = page.locator('section.op[data-method="post"][data-path="/resources"]')
            schema = json.loads(post.locator(".body-schema").inner_text())
            assert schema["required"] == ["name", "icon_uri"] and "uuid" in schema["properties"], schema
            assert "NewResource" in post.locator(".request-body h4").inner_text()

            # Try it out: GET /resources with alice's token.
            page.fill("#token", alice)
            page.press("#token", "Enter")  # submits nothing (the policy's form-action 'none' is never hit)
            get_list.locator("button.try").click()
            get_list.locator("button.execute").click()
            status = get_list.locator(".result .status")
            status.wait_for(state="visible")
            page.wait_for_function(
                "el => el.textContent.length > 0", arg=status.element_handle())
            assert status.inner_text().startswith("200"), (status.inner_text(),
                                                           get_list.locator(".response-body").inner_text())
            listed = json.loads(get_list.locator(".response-body").inner_text())
            assert {r["id"] for r in listed} == alice_ids, listed
            assert {r["name"] for r in listed} == {"Alice home", "Alice reports"}, listed
            assert all(r["ownership_id"] == "alice-0001" for r in listed), listed

            assert not console_errors, console_errors

            # Without the token the same call is the API's 401, shown as such.
            page.fill("#token", "")
            get_list.locator("button.execute").click()
            page.wait_for_function(
                "el => el.textContent.startsWith('401')", arg=status.element_handle())
            assert json.loads(get_list.locator(".response-body").inner_text())["error"] == "invalid_token"
        finally:
            browser.close()

    # The 401 is the API's answer to a request made on purpose; Chromium may log it as "Failed
    # to load resource": that one line and nothing else.
    assert len(console_errors) <= 1 and all("401" in e for e in console_errors), console_errors
    assert not outside, f"requests left loopback: {outside}"
    paths = {urlsplit(u).path for u in requested}
    assert {"/docs", "/docs/app.js", "/docs/app.css", "/openapi.json", "/resources"} <= paths, requested
    assert all(is_loopback(u) for u in requested), requested
    assert time.time() - started < 60
