"""devas: the development UMA 2.0 Authorization Server and the echo upstream of uma-pep.

Development/test fixture, NOT for production. It answers as Keycloak (`--profile keycloak`),
Gluu oxAuth (`--profile uma2`) and Janssen (`--profile janssen`) do, behaviour by behaviour as
read from their sources (devas/README.md, "Conformance table"), strict by default, so that the
filter's and pepctl's tests and `make run` meet what a real deployment meets; plus a control API
under `/_devas/` for call inspection, fault injection and test set-up.

Run `python -m devas --help` or `python -m devas.echo --help`. In-process use:
`devas.server.start(...)` and `devas.echo.start(...)`. This module imports nothing on purpose:
`python -m devas.echo` must not find the echo module already imported by the package.
"""

__all__ = ["FIXTURE_WARNING"]

FIXTURE_WARNING = "development/test fixture, NOT for production"
