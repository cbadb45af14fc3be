"""A bare aiohttp client for the Kubernetes API: what the floor, the load generator and the observer speak.

Deliberately small and independent of the reconciler's client (kubernetes-asyncio, tenacity, pydantic):
the floor must cost no more than a request and a `json.loads`, and the generator must not be the
bottleneck. Shared with the reconciler: the resource table (`reconciler.kube.resources`) and the optional
client-side limiter (`reconciler.kube.ratelimit.TokenBucket`), so `--qps` means the same on both sides.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from reconciler.kube.ratelimit import TokenBucket
from reconciler.kube.resources import BACKENDS, CHALLENGES, DOMAINCLAIMS, HTTPROUTES, PROJECTS, SERVICES, Resource

__all__ = [
    "BACKENDS",
    "CHALLENGES",
    "DOMAINCLAIMS",
    "HTTPROUTES",
    "NAMESPACES",
    "PROJECTS",
    "SERVICES",
    "Api",
    "Resource",
]

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path}: {status} {text[:300]}")
        self.status = status
        try:
            self.reason = str(json.loads(text).get("reason") or "")
        except (ValueError, AttributeError):
            self.reason = ""


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str
    token: str
    ca_pem: str

    @classmethod
    def from_kubeconfig(cls, path: Path | str) -> Credentials:
        """Server, token and CA of a kubeconfig of the shape the test bed writes (current context)."""
        config = yaml.safe_load(Path(path).read_text())
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        return cls(cluster["server"], user["token"], ca)


class Api:
    """JSON over one aiohttp session; `limiter` (a token bucket) delays every request as the reconciler's does."""

    def __init__(self, creds: Credentials, limiter: TokenBucket | None = None, connections: int = 100) -> None:
        self.creds = creds
        self.limiter = limiter
        self._ssl = ssl.create_default_context(cadata=creds.ca_pem)
        self._headers = {"Authorization": f"Bearer {creds.token}", "Accept": "application/json"}
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(self.creds.server, connector=connector, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _throttle(self) -> None:
        if self.limiter is not None:
            delay = self.limiter.reserve()
            if delay > 0:
                await asyncio.sleep(delay)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; the decoded answer, `ApiError` on non-2xx. No retries: callers decide."""
        await self._throttle()
        self.requests += 1
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else None
        async with self.session.request(method, path, data=data, params=params, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise ApiError(method, path, resp.status, text)
            return json.loads(text) if text else None

    async def text(self, path: str) -> str:
        """GET a text endpoint (`/metrics`)."""
        async with self.session.get(path, headers={"Accept": "*/*"}) as resp:
            return await resp.text()

    async def create(self, res: Resource, body: Obj, namespace: str | None = None) -> Obj:
        ns = namespace or body.get("metadata", {}).get("namespace")
        created: Obj = await self.request("POST", res.path(ns), body)
        return created

    async def patch(self, res: Resource, namespace: str | None, name: str, body: Obj, sub: str | None = None) -> Obj:
        patched: Obj = await self.request("PATCH", res.path(namespace, name, sub), body, content_type=MERGE_PATCH)
        return patched

    async def delete(self, res: Resource, namespace: str | None, name: str) -> None:
        try:
            await self.request("DELETE", res.path(namespace, name))
        except ApiError as err:
            if err.status != 404:
                raise

    async def served(self, res: Resource) -> bool:
        """Whether the API server serves this resource (e.g. a CRD that may not be installed)."""
        try:
            found = await self.request("GET", f"/apis/{res.group}/{res.version}")
        except ApiError:
            return False
        return any(r.get("name") == res.plural for r in found.get("resources") or ())

    async def list_rv(self, res: Resource, label_selector: str | None = None) -> tuple[list[Obj], str]:
        """Every object (paginated) and the list's resourceVersion."""
        items: list[Obj] = []
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self.request("GET", res.path(), params=params)
            items.extend(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, str(page["metadata"]["resourceVersion"])
            params["continue"] = token

    async def watch(
        self, res: Resource, resource_version: str, label_selector: str | None = None, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) per event until the server ends the watch; BOOKMARKs included."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        await self._throttle()
        self.requests += 1
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout + 30)
        async with self.session.get(res.path(), params=params, timeout=client_timeout) as resp:
            if resp.status != 200:
                raise ApiError("WATCH", res.path(), resp.status, await resp.text())
            while line := await resp.content.readline():
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]

    async def list_watch(self, res: Resource, label_selector: str | None = None) -> AsyncIterator[tuple[str, Obj]]:
        """List, then watch forever (re-listing after 410 or errors); a ("SYNCED", {}) after each list."""
        while True:
            try:
                items, rv = await self.list_rv(res, label_selector)
            except (ApiError, aiohttp.ClientError):
                await asyncio.sleep(0.5)
                continue
            for obj in items:
                yield "ADDED", obj
            yield "SYNCED", {}
            try:
                while True:
                    async for kind, obj in self.watch(res, rv, label_selector):
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind == "ERROR":
                            raise ApiError("WATCH", res.path(), int(obj.get("code") or 500), str(obj))
                        yield kind, obj
            except (ApiError, aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
