"""Wire schemas, the typed Python client and the ``mmserve`` CLI."""
