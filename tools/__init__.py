"""Offline tools that work on local files without a server (train-fusion, demo-data, tenant-key) and
the ``mmserve`` command that joins them to the client commands. They import neither Ray Serve nor
FastAPI: config through ``config``, models through ``models``."""
