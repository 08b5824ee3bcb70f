"""The Batch API's engine: a file store for inputs, state and results (``store``), the per-request
work on the same ``models/`` backends as the online path (``work``), the Ray Data pipeline
(``pipeline``) and the detached runner that owns one batch's run and survives the gateway (``runner``)."""
