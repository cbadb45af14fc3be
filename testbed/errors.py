"""Why a test-bed component failed to come up, as one family, so a caller can catch any of them."""

from __future__ import annotations


class ComponentError(RuntimeError):
    """A test-bed component could not be built, started or made ready."""


class ControlPlaneError(ComponentError):
    """The control plane (etcd, kube-apiserver, kube-controller-manager, CRDs) failed."""


class FullstackError(ComponentError):
    """A full-stack component (Envoy Gateway, Envoy, Pebble, challtestsrv, network namespace) failed."""
