"""The gateway: the HTTP ingress deployment (``ingress.Gateway``), its services, and one router per feature."""
