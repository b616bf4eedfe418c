"""`pepctl serve` while the AS is down: /filter-config and /healthz answer at once, /readyz
is 503 naming the cause, calls that need the AS are 503; once the AS answers, readiness turns
200 within the retry bound (the pause doubles from 0.5 s up to 5 s) and the API works."""

import os
import pty
import select
import subprocess
import time
import types

import pytest
import requests

from support.devas import DevAs, PROFILES
from support.pepctl import PEPCTL, Pepctl, write_seed
from support.processes import free_port


def issuer_at(profile: str, port: int) -> str:
    return f"http://127.0.0.1:{port}" + ("/realms/eoepca" if profile == "keycloak" else "")


@pytest.mark.parametrize("profile", PROFILES)
def test_serve_starts_without_the_as_and_becomes_ready(tmp_path, profile):
    port = free_port()
    p = Pepctl(tmp_path, types.SimpleNamespace(issuer=issuer_at(profile, port), profile=profile))
    p.use_seeded_client()
    server = p.serve(wait_ready=False)
    devas = None
    try:
        r = requests.get(server.base + "/filter-config", timeout=5)
        assert r.status_code == 200 and r.json()["resources"] == []
        assert requests.get(server.base + "/healthz", timeout=5).status_code == 200
        deadline = time.time() + 5
        while True:  # the first attempt is under way at once; its cause follows
            r = requests.get(server.base + "/readyz", timeout=5)
            assert r.status_code == 503
            body = r.json()
            if body["attempts"] >= 1 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert body["ready"] is False and body["error"] == "temporarily_unavailable"
        assert "connection refused" in body["error_description"], body
        r = server.request("POST", "/resources", "any-token", json={"name": "Early", "icon_uri": "/early"})
        assert r.status_code == 503
        assert r.json()["error"] == "temporarily_unavailable"
        assert "connection refused" in r.json()["error_description"]
        assert "retrying" in server.proc.output()

        devas = DevAs(profile, port=port)
        assert devas.issuer == issuer_at(profile, port)
        took = server.wait_ready(timeout=10)
        assert took < 10
        assert requests.get(server.base + "/readyz", timeout=5).json() == {"ready": True}
        r = server.request("POST", "/resources", devas.user_token("admin"), json={"name": "Late", "icon_uri": "/late"})
        assert r.status_code == 200, r.text
        assert [x["uri"] for x in requests.get(server.base + "/filter-config", timeout=5).json()["resources"]] == ["/late"]
    finally:
        server.stop()
        if devas is not None:
            devas.stop()


def test_mistakes_waiting_cannot_fix_still_stop_serve(tmp_path):
    """No client file: serve exits at once with the reason, it does not wait for the AS."""
    p = Pepctl(tmp_path, types.SimpleNamespace(issuer=f"http://127.0.0.1:{free_port()}", profile="uma2"))
    r = p.run("serve", "--listen", "127.0.0.1:0", check=False, timeout=20)
    assert r.returncode != 0
    assert "client.json" in r.stderr


# ---- colours -----------------------------------------------------------------------------------

def _warning_command(tmp_path):
    """A command that logs a warning through tracing (a client file that does not name its
    issuer) and then fails (no AS), with the environment asking for nothing about colours."""
    p = Pepctl(tmp_path, types.SimpleNamespace(issuer=f"http://127.0.0.1:{free_port()}", profile="uma2"))
    p.use_seeded_client()
    seed = write_seed(tmp_path / "seed.json", [{"name": "A", "resource_uri": "/a"}])
    env = {k: v for k, v in p.env.items() if k not in ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE")}
    return [str(PEPCTL), "resources", "apply", "-f", str(seed)], env, p.workdir


WARNING = b"the client file does not say which issuer"


def test_no_ansi_colours_when_stderr_is_a_pipe(tmp_path):
    args, env, cwd = _warning_command(tmp_path)
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, timeout=30)
    assert WARNING in r.stderr, r.stderr
    assert b"WARN" in r.stderr
    assert b"\x1b[" not in r.stderr, r.stderr


def test_ansi_colours_at_a_terminal(tmp_path):
    """The control: at a terminal the same line is coloured."""
    args, env, cwd = _warning_command(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        assert WARNING in seen, seen
        assert b"\x1b[" in seen
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=5)
        os.close(master)
