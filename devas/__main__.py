"""CLI of the development AS (development/test fixture, NOT for production):
`python -m devas --profile keycloak|uma2|janssen --port N [--host 127.0.0.1] [--seed FILE] [--realm eoepca]
[--base-url URL] [--state FILE] [--quiet]`. Prints exactly one stdout line, `devas ready profile=<p> issuer=<issuer>
port=<port>`, once it accepts connections; per-request lines (no tokens) go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devas import FIXTURE_WARNING
from devas.profiles import PROFILES
from devas.httpcore import wait_forever
from devas.server import start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devas",
                                     description=f"Development UMA 2.0 Authorization Server ({FIXTURE_WARNING}).")
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", help="JSON file merged over the built-in seed (see devas/README.md)")
    parser.add_argument("--realm", default="eoepca", help="Keycloak realm name (keycloak profile)")
    parser.add_argument("--base-url", help="public base URL for the issuer, default http://HOST:PORT")
    parser.add_argument("--quiet", action="store_true", help="no per-request line on stderr")
    parser.add_argument("--state", help="keep the realm, registrations, keys and tokens in FILE across a "
                                        "restart: read at start when it exists, written at SIGTERM")
    args = parser.parse_args(argv)
    restoring = bool(args.state) and Path(args.state).exists()
    handle = start(args.profile, args.port, args.seed, host=args.host, realm=args.realm,
                   base_url=args.base_url, log_requests=not args.quiet, state=args.state)
    if restoring:
        sys.stderr.write(f"devas: state restored from {args.state}\n")
    sys.stderr.write(f"devas: {FIXTURE_WARNING}; signing key kid={handle.app.key.kid}\n")
    sys.stderr.flush()
    print(f"devas ready profile={handle.profile} issuer={handle.issuer} port={handle.port}", flush=True)
    wait_forever(handle)
    if args.state:
        handle.app.save_state(args.state)


if __name__ == "__main__":
    main()
