"""devas: the development UMA 2.0 Authorization Server and the echo upstream of uma-pep.

Development/test fixture, NOT for production. It emulates the wire formats of Keycloak
(`--profile keycloak`) and of Gluu/Janssen, i.e. the UMA 2.0 spec dialect (`--profile uma2`),
so that the filter's end-to-end tests and `make run` have an AS that behaves like the real ones,
plus a control API under `/_devas/` for call inspection and fault injection.

Run `python -m devas --help` or `python -m devas.echo --help`. In-process use:
`devas.server.start(...)` and `devas.echo.start(...)`. This module imports nothing on purpose:
`python -m devas.echo` must not find the echo module already imported by the package.
"""

__all__ = ["FIXTURE_WARNING"]

FIXTURE_WARNING = "development/test fixture, NOT for production"
