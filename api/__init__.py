"""What both sides of HTTP share: the wire schemas (``api.schemas``) and the one error shape.

Imports nothing else of mmserve, so the client can depend on it without the server."""
