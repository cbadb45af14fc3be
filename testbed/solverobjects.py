"""The objects cert-manager v1.21's HTTP-01 Gateway solver generates per Challenge, as docs/cert-manager-http01.md
describes them: solver Pod, Service and HTTPRoute, their labels and the controller reference that marks
them as really cert-manager's. Pure functions of the Challenge, so Present can compare and revert.
"""

from __future__ import annotations

import ipaddress
import zlib
from typing import Final

from testbed.kube import CHALLENGES, HTTPROUTES, Obj

SOLVER_PORT: Final = 8089
GENERATE_NAME: Final = "cm-acme-http-solver-"
LABEL_DOMAIN: Final = "acme.cert-manager.io/http-domain"
LABEL_TOKEN: Final = "acme.cert-manager.io/http-token"
LABEL_SOLVER: Final = "acme.cert-manager.io/http01-solver"
SOLVER_IMAGE: Final = "quay.io/jetstack/cert-manager-acmesolver:v1.21.1"


def solver_labels(ch: Obj) -> dict[str, str]:
    """The three labels cert-manager puts on (and selects) its solver objects."""
    spec = ch["spec"]
    return {
        LABEL_DOMAIN: str(zlib.adler32(spec["dnsName"].encode())),
        LABEL_TOKEN: str(zlib.adler32(spec["token"].encode())),
        LABEL_SOLVER: "true",
    }


def _gateway_solver(ch: Obj) -> Obj:
    route: Obj = ch["spec"]["solver"]["http01"]["gatewayHTTPRoute"]
    return route


def owner_reference(ch: Obj) -> Obj:
    """The controller reference to the Challenge that marks an object as really cert-manager's."""
    return {
        "apiVersion": CHALLENGES.api_version,
        "kind": "Challenge",
        "name": ch["metadata"]["name"],
        "uid": ch["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_controlled_by(obj: Obj, ch: Obj) -> bool:
    """True when ``obj``'s controller reference points at ``ch`` (by uid)."""
    return any(
        ref.get("controller") and ref.get("uid") == ch["metadata"]["uid"]
        for ref in obj["metadata"].get("ownerReferences", [])
    )


def _meta(ch: Obj, labels: dict[str, str], annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {
        "generateName": GENERATE_NAME,
        "namespace": ch["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(ch)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def build_pod(ch: Obj) -> Obj:
    """The solver Pod (never runs here: there is no kubelet, so it stays Pending)."""
    spec = ch["spec"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(ch, solver_labels(ch), {"sidecar.istio.io/inject": "false"}),
        "spec": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "restartPolicy": "OnFailure",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "acmesolver",
                    "image": SOLVER_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "args": [
                        f"--listen-port={SOLVER_PORT}",
                        f"--domain={spec['dnsName']}",
                        f"--token={spec['token']}",
                        f"--key={spec['key']}",
                    ],
                    "ports": [{"name": "http", "containerPort": SOLVER_PORT}],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "64Mi"},
                        "limits": {"cpu": "100m", "memory": "64Mi"},
                    },
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def build_service(ch: Obj) -> Obj:
    """The solver Service: NodePort unless the solver config names another type."""
    labels = solver_labels(ch)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ch, labels, {"auth.istio.io/8089": "NONE"}),
        "spec": {
            "type": _gateway_solver(ch).get("serviceType") or "NodePort",
            "ports": [{"name": "http", "port": SOLVER_PORT, "targetPort": SOLVER_PORT}],
            "selector": dict(labels),
        },
    }


def route_labels(ch: Obj) -> dict[str, str]:
    """Solver labels plus the solver config's ``gatewayHTTPRoute.labels`` (which win on a clash)."""
    return {**solver_labels(ch), **(_gateway_solver(ch).get("labels") or {})}


def route_spec(ch: Obj, service_name: str) -> Obj:
    """The HTTPRoute spec cert-manager generates and reverts to."""
    spec = ch["spec"]
    generated: Obj = {"parentRefs": [dict(p) for p in _gateway_solver(ch).get("parentRefs") or []]}
    try:
        ipaddress.ip_address(spec["dnsName"])
    except ValueError:
        generated["hostnames"] = [spec["dnsName"]]
    generated["rules"] = [
        {
            "matches": [{"path": {"type": "Exact", "value": f"/.well-known/acme-challenge/{spec['token']}"}}],
            "backendRefs": [
                {
                    "group": "",
                    "kind": "Service",
                    "name": service_name,
                    "namespace": ch["metadata"]["namespace"],
                    "port": SOLVER_PORT,
                    "weight": 1,
                }
            ],
        }
    ]
    return generated


def build_route(ch: Obj, service_name: str) -> Obj:
    """The solver HTTPRoute pointing at ``service_name``."""
    return {
        "apiVersion": HTTPROUTES.api_version,
        "kind": "HTTPRoute",
        "metadata": _meta(ch, route_labels(ch)),
        "spec": route_spec(ch, service_name),
    }
