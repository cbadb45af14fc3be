"""Wires cert-manager HTTP-01 solvers in kube-dc cloud projects to a shared Envoy Gateway."""

__version__ = "0.1.0"
