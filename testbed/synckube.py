"""A minimal blocking API client for start-up code: CRDs, the Gateway objects, readiness probes.

Start-up runs before (or outside) any event loop, so it cannot use the async ``testbed.kube`` client.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from testbed.errors import ComponentError
from testbed.kube import CRDS, Resource
from testbed.polling import WaitTimeout, wait_until


def load_crds(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``paths`` (other documents are skipped)."""
    docs: list[dict[str, Any]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def condition(obj: Mapping[str, Any] | None, type_: str, *, parents: bool = False) -> dict[str, Any] | None:
    """A status condition by type (for routes: from the first parent status)."""
    if obj is None:
        return None
    status = obj.get("status") or {}
    if parents:
        status = (status.get("parents") or [{}])[0]
    found: dict[str, Any] | None = next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)
    return found


class SyncKube:
    """Just enough of the API for start-up code: server-side apply, get, delete, CRD installation."""

    def __init__(self, server: str, token: str, verify: ssl.SSLContext, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=server,
            verify=verify,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            trust_env=False,
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, timeout: float = 30.0) -> SyncKube:
        """Server, CA data and token from a kubeconfig of the shape ``testbed.pki`` writes."""
        config = yaml.safe_load(kubeconfig.read_text())
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        verify = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        return cls(cluster["server"], user["token"], verify, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def status_code(self, path: str) -> int:
        """The status of a GET on a plain-text endpoint such as ``/readyz``."""
        return self.http.get(path, headers={"Accept": "*/*"}).status_code

    def apply(self, res: Resource, obj: Mapping[str, Any], field_manager: str = "testbed") -> dict[str, Any]:
        """Forced server-side apply."""
        meta = obj["metadata"]
        resp = self.http.patch(
            res.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": field_manager, "force": "true"},
            headers={"Content-Type": "application/apply-patch+yaml"},
            content=json.dumps({"apiVersion": res.api_version, **obj}),
        )
        if resp.status_code >= 300:
            raise ComponentError(f"apply {res.plural}/{meta['name']}: {resp.status_code} {resp.text}")
        result: dict[str, Any] = resp.json()
        return result

    def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        resp = self.http.get(res.path(namespace, name))
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def delete(self, res: Resource, name: str, namespace: str | None = None) -> None:
        """Delete; absent is fine."""
        resp = self.http.delete(res.path(namespace, name))
        if resp.status_code not in (200, 202, 404):
            raise ComponentError(f"delete {res.plural}/{name}: {resp.status_code} {resp.text}")

    def install_crds(
        self, docs: Sequence[Mapping[str, Any]], *, timeout: float = 60.0, keep_existing: bool = False
    ) -> list[str]:
        """Apply CRDs (with ``keep_existing``, only those the server lacks) and wait until each is
        Established and its resource is listed by discovery, i.e. objects of it can be written. Returns
        the names applied."""
        if keep_existing:
            docs = [d for d in docs if self.get(CRDS, d["metadata"]["name"]) is None]
        for doc in docs:
            self.apply(CRDS, doc)
        pending = list(docs)

        def all_served() -> bool:
            pending[:] = [d for d in pending if not self._crd_served(d)]
            return not pending

        try:
            wait_until("CRDs established and served", all_served, timeout)
        except WaitTimeout as err:
            names = ", ".join(d["metadata"]["name"] for d in pending)
            raise ComponentError(f"CRDs not established and served in time: {names} ({err})") from None
        return [d["metadata"]["name"] for d in docs]

    def _crd_served(self, doc: Mapping[str, Any]) -> bool:
        if (condition(self.get(CRDS, doc["metadata"]["name"]), "Established") or {}).get("status") != "True":
            return False
        group, plural = doc["spec"]["group"], doc["spec"]["names"]["plural"]
        for version in doc["spec"]["versions"]:
            if not version.get("served", True):
                continue
            resp = self.http.get(f"/apis/{group}/{version['name']}")
            if resp.status_code != 200 or plural not in {r.get("name") for r in resp.json().get("resources", [])}:
                return False
        return True
