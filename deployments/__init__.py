"""Ray Serve deployments: thin classes that hold a model object and batch its forward.

No model math lives here (see ``models/``); HTTP lives only in the gateway.
"""
