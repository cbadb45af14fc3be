"""cert-manager's own objects as the real controller reads them: ACME Issuers on Pebble, Certificates, the
manual renewal trigger, and the checks a test makes on the result (Ready, the Secret's chain).

An Issuer (or the PRD's one ClusterIssuer for every project) points at Pebble's directory, trusts Pebble's
HTTPS CA through ``caBundle`` and solves HTTP-01 with a ``gatewayHTTPRoute`` solver attached to the shared
Gateway. ``wait_instead_of_self_check`` (v1.21) replaces the self-check by a fixed wait after Present.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from testbed.kube import CERTIFICATES, CLUSTERISSUERS, ISSUERS, Kube, Obj, Resource

ISSUER_NAME: Final = "pebble"
ACCOUNT_SECRET: Final = "pebble-account"
MANUAL_RENEWAL_REASON: Final = "ManuallyTriggered"  # what `cmctl renew` writes


def acme_issuer(
    directory_url: str,
    ca_pem: bytes,
    parent_ref: Mapping[str, Any],
    *,
    namespace: str | None = None,
    name: str = ISSUER_NAME,
    wait_instead_of_self_check: float | None = None,
    email: str = "testbed@example.test",
) -> Obj:
    """An ACME Issuer in ``namespace`` (a ClusterIssuer when None) whose HTTP-01 solver attaches
    cert-manager's routes to the shared Gateway."""
    solver: Obj = {"http01": {"gatewayHTTPRoute": {"parentRefs": [dict(parent_ref)]}}}
    if wait_instead_of_self_check is not None:
        solver["waitInsteadOfSelfCheck"] = f"{wait_instead_of_self_check:g}s"
    metadata: Obj = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": ISSUERS.api_version,
        "kind": "Issuer" if namespace is not None else "ClusterIssuer",
        "metadata": metadata,
        "spec": {
            "acme": {
                "server": directory_url,
                "caBundle": base64.b64encode(ca_pem).decode(),
                "email": email,
                "privateKeySecretRef": {"name": ACCOUNT_SECRET},
                "solvers": [solver],
            }
        },
    }


def issuer_resource(issuer: Obj) -> Resource:
    """Where an Issuer or ClusterIssuer object lives."""
    return ISSUERS if issuer["kind"] == "Issuer" else CLUSTERISSUERS


def certificate(
    name: str,
    namespace: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    issuer_kind: str = "Issuer",
    issuer_name: str = ISSUER_NAME,
    secret_name: str | None = None,
) -> Obj:
    """A Certificate (ECDSA P-256 key) for ``dns_names`` and ``ip_addresses``; its Secret is ``<name>-tls``."""
    spec: Obj = {
        "secretName": secret_name or f"{name}-tls",
        "issuerRef": {"name": issuer_name, "kind": issuer_kind, "group": "cert-manager.io"},
        "privateKey": {"algorithm": "ECDSA", "size": 256},
    }
    if dns_names:
        spec["dnsNames"] = list(dns_names)
    if ip_addresses:
        spec["ipAddresses"] = list(ip_addresses)
    return {
        "apiVersion": CERTIFICATES.api_version,
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def condition(obj: Obj | None, type_: str) -> Obj | None:
    """The status condition of that type."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_ready(obj: Obj | None, revision: int = 1) -> bool:
    """Ready=True (Issuers, Certificates); for a Certificate also at least ``revision`` issuances done."""
    cond = condition(obj, "Ready")
    if cond is None or cond.get("status") != "True":
        return False
    if (obj or {}).get("kind") != "Certificate":
        return True
    return int(((obj or {}).get("status") or {}).get("revision") or 0) >= revision


def with_issuing_condition(cert: Obj, now: dt.datetime | None = None) -> Obj:
    """``cert`` with the condition ``cmctl renew`` sets: Issuing=True, reason ManuallyTriggered, for the
    current generation. The certificates-trigger controller takes it as a re-issuance request."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = {
        "type": "Issuing",
        "status": "True",
        "reason": MANUAL_RENEWAL_REASON,
        "message": "Certificate re-issuance manually triggered",
        "lastTransitionTime": stamp,
        "observedGeneration": cert["metadata"].get("generation", 1),
    }
    status = dict(cert.get("status") or {})
    others = [c for c in status.get("conditions") or [] if c.get("type") != "Issuing"]
    status["conditions"] = [*others, new]
    return {**cert, "status": status}


async def renew(api: Kube, name: str, namespace: str) -> Obj:
    """Trigger a re-issuance the way ``cmctl renew`` does: update the Certificate's status subresource
    with the Issuing condition (optimistic concurrency: a conflict is raised, not retried)."""
    cert = await api.get(CERTIFICATES, name, namespace)
    return await api.update_status(CERTIFICATES, with_issuing_condition(cert))


def verify_chain(tls_crt_pem: bytes, tls_key_pem: bytes, root_pem: bytes) -> x509.Certificate:
    """The chain in ``tls.crt`` verifies link by link to ``root_pem`` and the key matches the leaf;
    returns the leaf. Raises ``ValueError`` (or cryptography's errors) when not."""
    chain = x509.load_pem_x509_certificates(tls_crt_pem)
    root = x509.load_pem_x509_certificate(root_pem)
    if len(chain) < 2:
        raise ValueError(f"expected leaf and intermediate, got {len(chain)} certificates")
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        child.verify_directly_issued_by(parent)
    leaf = chain[0]
    key = serialization.load_pem_private_key(tls_key_pem, None)
    spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ValueError("tls.key does not match the leaf certificate")
    return leaf


def subject_alt_names(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    """The leaf's DNS names and IP addresses, sorted."""
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return sorted(san.get_values_for_type(x509.DNSName)), sorted(ips, key=ipaddress.ip_address)


def secret_pems(secret: Obj) -> tuple[bytes, bytes]:
    """(tls.crt, tls.key) of a ``kubernetes.io/tls`` Secret."""
    if secret.get("type") != "kubernetes.io/tls":
        raise ValueError(f"Secret type {secret.get('type')!r}")
    data = secret["data"]
    return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
