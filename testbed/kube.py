"""A small async Kubernetes API client for test code.

Deliberately independent of the product's client: tests use it as the oracle, so a bug in the product's
request building cannot hide itself. Objects are plain dicts (the JSON the API returns).
"""

from __future__ import annotations

import base64
import builtins
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import anyio
import httpx
import yaml

from testbed import polling

Obj = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API: ``group`` is "" for the core group."""

    group: str
    version: str
    plural: str
    namespaced: bool = True
    kind: str = ""  # set for the kinds ``BY_KIND`` lists

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` string objects of this resource carry."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        """The URL path; ``namespace=None`` on a namespaced resource means all namespaces (list/watch)."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if sub is not None:
            parts.append(sub)
        return "/".join(parts)


NAMESPACES = Resource("", "v1", "namespaces", namespaced=False, kind="Namespace")
SERVICES = Resource("", "v1", "services", kind="Service")
PODS = Resource("", "v1", "pods", kind="Pod")
SECRETS = Resource("", "v1", "secrets")
EVENTS = Resource("", "v1", "events")
CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", kind="ServiceAccount")
EVENTS_V1 = Resource("events.k8s.io", "v1", "events")
LEASES = Resource("coordination.k8s.io", "v1", "leases", kind="Lease")
CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", namespaced=False, kind="ClusterRole")
CLUSTERROLEBINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", namespaced=False, kind="ClusterRoleBinding"
)
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", kind="Role")
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", kind="RoleBinding")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False, kind="CustomResourceDefinition"
)
DOMAINCLAIMS = Resource("acme-gateway.kube-dc.com", "v1alpha1", "domainclaims", namespaced=False, kind="DomainClaim")
TLSROUTES = Resource("gateway.networking.k8s.io", "v1", "tlsroutes", kind="TLSRoute")
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", kind="HTTPRoute")
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways", kind="Gateway")
GATEWAYCLASSES = Resource("gateway.networking.k8s.io", "v1", "gatewayclasses", namespaced=False, kind="GatewayClass")
REFERENCEGRANTS = Resource("gateway.networking.k8s.io", "v1beta1", "referencegrants")
BACKENDS = Resource("gateway.envoyproxy.io", "v1alpha1", "backends", kind="Backend")
ENVOYPROXIES = Resource("gateway.envoyproxy.io", "v1alpha1", "envoyproxies")
BACKENDTRAFFICPOLICIES = Resource("gateway.envoyproxy.io", "v1alpha1", "backendtrafficpolicies")
CHALLENGES = Resource("acme.cert-manager.io", "v1", "challenges", kind="Challenge")
ORDERS = Resource("acme.cert-manager.io", "v1", "orders")
CERTIFICATES = Resource("cert-manager.io", "v1", "certificates")
ISSUERS = Resource("cert-manager.io", "v1", "issuers")
CLUSTERISSUERS = Resource("cert-manager.io", "v1", "clusterissuers", namespaced=False)
PROJECTS = Resource("kube-dc.com", "v1", "projects", kind="Project")
EIPS = Resource("kube-dc.com", "v1", "eips", kind="EIp")
DEPLOYMENTS = Resource("apps", "v1", "deployments", kind="Deployment")

# kind -> resource, for applying manifests (apiVersion is checked against the resource's).
_MANIFEST_KINDS = (
    CRDS,
    DOMAINCLAIMS,
    TLSROUTES,
    NAMESPACES,
    DEPLOYMENTS,
    SERVICES,
    PODS,
    CONFIGMAPS,
    SERVICEACCOUNTS,
    LEASES,
    CLUSTERROLES,
    CLUSTERROLEBINDINGS,
    ROLES,
    ROLEBINDINGS,
    HTTPROUTES,
    GATEWAYS,
    GATEWAYCLASSES,
    BACKENDS,
    CHALLENGES,
    PROJECTS,
    EIPS,
)
BY_KIND: dict[str, Resource] = {r.kind: r for r in _MANIFEST_KINDS}


class ApiError(Exception):
    """A non-2xx answer, carrying the API's own Status message so test failures explain themselves."""

    def __init__(self, method: str, path: str, status: int, body: Obj | str) -> None:
        self.method, self.path, self.status, self.body = method, path, status, body
        if isinstance(body, dict):
            self.reason = str(body.get("reason", ""))
            self.message = str(body.get("message", body))
        else:
            self.reason, self.message = "", body
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")

    @property
    def not_found(self) -> bool:
        """404."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: stale resourceVersion or already exists."""
        return self.status == 409


PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: type is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: Obj


class Kube:
    """Async REST client with a bearer token and a pinned CA; use ``async with``."""

    def __init__(self, server: str, token: str, ca: ssl.SSLContext | Path, timeout: float = 30.0) -> None:
        verify = ca if isinstance(ca, ssl.SSLContext) else ssl.create_default_context(cafile=str(ca))
        self.server = server
        self._token, self._verify, self._timeout = token, verify, timeout
        self._http = httpx.AsyncClient(
            base_url=server,
            verify=verify,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )

    def impersonating(self, user: str) -> Kube:
        """A client acting as `user` (this admin client impersonating it), so the real RBAC decides what
        that user may do; close it with ``async with``."""
        other = Kube(self.server, self._token, self._verify, self._timeout)
        other._http.headers["Impersonate-User"] = user
        return other

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Kube:
        """Read server, CA data and token from a kubeconfig of the shape ``testbed`` writes."""
        config = yaml.safe_load(path.read_text())
        ctx_name = config["current-context"]
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        context = ssl.create_default_context(cadata=ca_pem)
        return cls(cluster["server"], user["token"], context)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # raw

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; return the decoded JSON, raise ``ApiError`` on non-2xx."""
        headers = {"Content-Type": content_type} if body is not None else {}
        content = json.dumps(body) if body is not None else None
        resp = await self._http.request(method, path, content=content, params=params, headers=headers)
        if resp.status_code >= 300:
            try:
                detail: Obj | str = resp.json()
            except ValueError:
                detail = resp.text
            raise ApiError(method, path, resp.status_code, detail)
        return resp.json() if resp.content else None

    async def get_text(self, path: str) -> tuple[int, str]:
        """GET a non-JSON endpoint such as ``/readyz``: (status code, body)."""
        resp = await self._http.get(path, headers={"Accept": "*/*"})
        return resp.status_code, resp.text

    async def whoami(self) -> Obj:
        """The authenticated user as the API server sees it (a SelfSubjectReview)."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        result: Obj = await self.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review)
        return dict(result["status"]["userInfo"])

    # verbs

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj:
        """GET one object."""
        obj: Obj = await self.request("GET", res.path(namespace, name))
        return obj

    async def get_or_none(self, res: Resource, name: str, namespace: str | None = None) -> Obj | None:
        """GET one object, ``None`` when it does not exist."""
        try:
            return await self.get(res, name, namespace)
        except ApiError as err:
            if err.not_found:
                return None
            raise

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[Obj]:
        """The items of a list (all namespaces when ``namespace`` is None)."""
        return builtins.list((await self.list_raw(res, namespace, label_selector, field_selector))["items"])

    async def list_raw(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        """The whole List object, for its ``metadata.resourceVersion``."""
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = (
                label_selector
                if isinstance(label_selector, str)
                else ",".join(f"{k}={v}" for k, v in label_selector.items())
            )
        if field_selector:
            params["fieldSelector"] = field_selector
        result: Obj = await self.request("GET", res.path(namespace), params=params)
        return result

    async def create(self, res: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        """POST; namespace defaults to ``obj.metadata.namespace``; apiVersion/kind are filled if absent."""
        ns = namespace or obj.get("metadata", {}).get("namespace")
        created: Obj = await self.request("POST", res.path(ns), body=obj)
        return created

    async def update(self, res: Resource, obj: Obj) -> Obj:
        """PUT the whole object (optimistic concurrency through its resourceVersion)."""
        meta = obj["metadata"]
        updated: Obj = await self.request("PUT", res.path(meta.get("namespace"), meta["name"]), body=obj)
        return updated

    async def update_status(self, res: Resource, obj: Obj) -> Obj:
        """PUT the object to its status subresource."""
        meta = obj["metadata"]
        path = res.path(meta.get("namespace"), meta["name"], "status")
        updated: Obj = await self.request("PUT", path, body=obj)
        return updated

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str = "testbed",
        force: bool = True,
    ) -> Obj:
        """PATCH with a merge (default), JSON, strategic-merge or server-side-apply patch."""
        params = {"fieldManager": field_manager}
        if type == "apply" and force:
            params["force"] = "true"
        path = res.path(namespace, name, subresource)
        patched: Obj = await self.request(
            "PATCH", path, body=patch, params=params, content_type=_PATCH_CONTENT_TYPES[type]
        )
        return patched

    async def patch_status(self, res: Resource, name: str, patch: Any, namespace: str | None = None) -> Obj:
        """Merge-patch the status subresource."""
        return await self.patch(res, name, patch, namespace, subresource="status")

    async def apply(self, res: Resource, obj: Obj, field_manager: str = "testbed") -> Obj:
        """Server-side apply (forced), creating or updating."""
        meta = obj["metadata"]
        return await self.patch(
            res, meta["name"], obj, meta.get("namespace"), type="apply", field_manager=field_manager
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Literal["Foreground", "Background", "Orphan"] | None = None,
        missing_ok: bool = False,
    ) -> Obj | None:
        """DELETE; with ``missing_ok`` a 404 is not an error."""
        body = {"propagationPolicy": propagation} if propagation else None
        try:
            result: Obj | None = await self.request("DELETE", res.path(namespace, name), body=body)
            return result
        except ApiError as err:
            if missing_ok and err.not_found:
                return None
            raise

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """Stream watch events until the server closes the watch; an ERROR event raises ``ApiError``
        (410 Gone means: list again)."""
        params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        path = res.path(namespace)
        timeout = httpx.Timeout(10.0, read=timeout_seconds + 30.0)
        async with self._http.stream("GET", path, params=params, timeout=timeout) as resp:
            if resp.status_code >= 300:
                await resp.aread()
                raise ApiError("WATCH", path, resp.status_code, resp.text)
            async for line in resp.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise ApiError("WATCH", path, int(status.get("code", 500)), status)
                yield WatchEvent(event["type"], event["object"])

    async def list_watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """List, then watch, forever: re-watches from the last resourceVersion when a watch ends and
        lists again after 410 Gone or a connection error (yielding DELETED for objects that vanished
        meanwhile). A ``SYNCED`` event with an empty object follows every complete list."""
        known: dict[str, Obj] = {}
        while True:
            try:
                listed = await self.list_raw(res, namespace, label_selector)
            except (ApiError, httpx.HTTPError):
                await anyio.sleep(0.5)
                continue
            current = {o["metadata"]["uid"]: o for o in listed["items"]}
            for uid, obj in known.items():
                if uid not in current:
                    yield WatchEvent("DELETED", obj)
            for uid, obj in current.items():
                yield WatchEvent("MODIFIED" if uid in known else "ADDED", obj)
            known = current
            yield WatchEvent("SYNCED", {})
            rv = str(listed["metadata"]["resourceVersion"])
            try:
                while True:
                    async for event in self.watch(res, namespace, resource_version=rv, label_selector=label_selector):
                        rv = str(event.object.get("metadata", {}).get("resourceVersion", rv))
                        if event.type == "BOOKMARK":
                            continue
                        uid = event.object["metadata"]["uid"]
                        if event.type == "DELETED":
                            known.pop(uid, None)
                        else:
                            known[uid] = event.object
                        yield event
            except (ApiError, httpx.HTTPError):
                await anyio.sleep(0.2)  # 410 Gone or a dropped connection: list again


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = 10.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """``testbed.polling.wait_for`` with API errors (a 404 before the object exists) counted as "not yet"."""
    return await polling.wait_for(probe, within=within, interval=interval, what=what, retry_on=(ApiError,))


def load_manifests(path: Path) -> list[Obj]:
    """All non-empty YAML documents of a manifest file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
