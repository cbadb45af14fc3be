"""Local test bed: a real Kubernetes control plane on loopback plus stand-ins for cert-manager and kube-dc.

Kept separate from the ``reconciler`` package so that the tests judge the product with code that does not
share its client or its assumptions.
"""

from testbed.controlplane import ControlPlane
from testbed.errors import ControlPlaneError

__all__ = ["ControlPlane", "ControlPlaneError"]
