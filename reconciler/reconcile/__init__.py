"""The functional core: views in, intended writes out.

Nothing in this package performs I/O or imports anything that does; the shell
(`reconciler.controller`) applies the returned intents, conditional on the resourceVersion each one was
computed from.
"""
