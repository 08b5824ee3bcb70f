"""Ray-free model code: backends, preprocessing, packaged-weight locations and the registry.

Nothing in this package imports Ray, so every backend can be loaded and tested in a plain process.
"""
