"""Typed, Ray-free configuration: the app's args (``args``), gateway and batch settings
(``settings``), the tenants file (``tenants``) and the Serve config file loader (``serve_file``)."""
