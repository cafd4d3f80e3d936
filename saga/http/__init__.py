"""The HTTP API and the web console (``saga console``, ``saga coordinator --http``).

Example:
    >>> app = create_app(client)                       # an ASGI app: /api/... and /
    >>> async with HttpServer(app, "127.0.0.1", 8088):
    ...     ...
"""

from saga.http.app import create_app
from saga.http.server import HttpServer, parse_address

__all__ = ["HttpServer", "create_app", "parse_address"]
