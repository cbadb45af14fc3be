"""The functional core: views in, intended writes out.

Nothing in this package performs I/O or imports anything that does (a unit test enforces it); the shell
(`reconciler.controller` and `reconciler.writer`) applies the returned intents, each conditional on the
resourceVersion it was computed from.
"""
