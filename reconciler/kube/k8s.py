"""kubernetes-asyncio's configuration loaders, without loading its generated API and model classes.

We use kubernetes-asyncio only to load a client configuration (kubeconfig, contexts, exec plugins,
in-cluster tokens). Importing it the usual way executes `kubernetes_asyncio/__init__.py`, which imports
every generated API and model class: ~38 MiB of resident memory, a third of the reconciler's, for code we
never call. So the two packages are registered here unexecuted (their submodules import normally), and
the first access to anything else runs the real `__init__` into the same module object: any other user
of kubernetes-asyncio in the process still sees the whole package.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

PACKAGES = ("kubernetes_asyncio", "kubernetes_asyncio.client")


def _register_unexecuted(name: str) -> ModuleType | None:
    """The package's module object in sys.modules with its path set, its `__init__` not yet run."""
    if name in sys.modules:
        return None
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # pragma: no cover - the dependency is always installed
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    state = {"loaded": False}

    def load() -> None:
        if not state["loaded"]:
            state["loaded"] = True
            assert spec.loader is not None
            spec.loader.exec_module(module)

    def attribute(attr: str) -> Any:
        """A submodule is imported on its own; anything else runs the real `__init__` first."""
        if not attr.startswith("__") and importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        load()
        if attr in module.__dict__:
            return module.__dict__[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = attribute  # type: ignore[method-assign]
    module.__dict__["_load_all"] = load
    return module


def _install() -> None:
    top = _register_unexecuted("kubernetes_asyncio")
    client = _register_unexecuted("kubernetes_asyncio.client")
    if client is None:
        return
    if top is not None:
        top.__dict__["client"] = client
    from kubernetes_asyncio.client import configuration

    client.__dict__["Configuration"] = configuration.Configuration
    load_all: Callable[[], None] = client.__dict__["_load_all"]

    def api_client(*args: Any, **kwargs: Any) -> Any:
        """Named by the kubeconfig loader for a helper we never call; builds the real one if called."""
        load_all()
        return client.__dict__["ApiClient"](*args, **kwargs)

    client.__dict__["ApiClient"] = api_client  # only while the loader imports: every later user gets the real class
    try:
        import kubernetes_asyncio.config  # noqa: F401
    finally:
        del client.__dict__["ApiClient"]


_install()

from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402
from kubernetes_asyncio.config import incluster_config, kube_config  # noqa: E402

__all__ = ["Configuration", "incluster_config", "kube_config"]
