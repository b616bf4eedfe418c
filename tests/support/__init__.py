"""The one harness of every Python test suite (and of `examples/demo.py`), by concern:

- `processes`: the repository root, free ports, child processes that print a ready line, polling;
- `devas`: the development AS as a child process, and what its seed holds (clients, users, resources);
- `echo`: the echo upstream;
- `envoy`: real Envoy with the built filter, from a filter configuration or a whole bootstrap;
- `pepctl`: the `pepctl` binary and `pepctl serve`;
- `tls`: a test CA, and a TLS AS just big enough for discovery and registration;
- `uma_client`: what a UMA client does with a challenge;
- `fixtures`: the pytest fixtures of a whole stack (AS, echo, Envoys), imported by name by a conftest.

`pytest.ini` puts `tests/` on the path, so a test imports `from support.envoy import Envoy`.

Artifacts come from the environment: UMA_PEP_WASM, ENVOY_BIN, PEPCTL_BIN, and DEVAS_DIR (where
`python -m devas` runs; default the repository).
"""
