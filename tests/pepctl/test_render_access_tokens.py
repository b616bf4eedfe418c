"""`pepctl render --access-tokens uma|decide [--return-rpt]` (docs/access-tokens.md): the
rendered filter configuration carries `access_tokens`, checked by the filter's own parser
inside pepctl, and a combination the filter refuses is refused at render time naming the flag."""

import json
import subprocess

import pytest

from support.envoy import ENVOY_BIN, WASM


def render(pepctl, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    pepctl.use_seeded_client()
    return pepctl.run("render", "filter-config", *flags, check=check)


def test_no_flag_leaves_the_key_out(pepctl):
    assert "access_tokens" not in json.loads(render(pepctl).stdout)


@pytest.mark.parametrize("mode", ["uma", "decide"])
def test_the_mode_flag_sets_the_key(pepctl, mode):
    cfg = json.loads(render(pepctl, "--access-tokens", mode).stdout)
    assert cfg["access_tokens"] == {"mode": mode}


def test_return_rpt_is_rendered_for_uma2_and_refused_for_keycloak_naming_the_flag(pepctl, devas):
    p = render(pepctl, "--access-tokens", "decide", "--return-rpt", check=False)
    if devas.profile == "uma2":
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["access_tokens"] == {"mode": "decide", "return_rpt": True}
    else:
        # A Keycloak decision (response_mode=decision) carries no RPT to return.
        assert p.returncode != 0 and p.stdout == ""
        assert "--return-rpt" in p.stderr and "access_tokens.return_rpt" in p.stderr, p.stderr


def test_return_rpt_needs_decide(pepctl):
    for flags in (["--return-rpt"], ["--access-tokens", "uma", "--return-rpt"]):
        p = render(pepctl, *flags, check=False)
        assert p.returncode != 0 and "--return-rpt" in p.stderr, (flags, p.stderr)


def test_an_unknown_mode_is_refused_listing_the_values(pepctl):
    p = render(pepctl, "--access-tokens", "rpt", check=False)
    assert p.returncode != 0
    assert "--access-tokens" in p.stderr and "decide" in p.stderr and "uma" in p.stderr, p.stderr


def test_rendered_envoy_with_decide_passes_envoy_validate(pepctl, tmp_path):
    """The filter inside Envoy parses what was rendered (the key is the filter's, not pepctl's)."""
    if not WASM.exists():
        pytest.fail(f"the filter is not built ({WASM}); `make wasm` first")
    pepctl.use_seeded_client()
    doc = json.loads(pepctl.run("render", "envoy", "--json", "--wasm", str(WASM), "--upstream", "127.0.0.1:9",
                                "--access-tokens", "decide").stdout)
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(doc))
    p = subprocess.run([ENVOY_BIN, "--mode", "validate", "-c", str(path), "--log-level", "info"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "uma-pep configured" in p.stdout + p.stderr   # the filter ran its parser on it
