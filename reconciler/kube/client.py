"""Requests to the Kubernetes API, as raw JSON.

kubernetes-asyncio supplies the configuration: kubeconfig / in-cluster loading, TLS, bearer tokens and
their refresh; `transport.py` sends the requests. We bypass its model classes (deserializing a Service
into `V1Service` costs ~25x a `json.loads`) and its request path, and read and write plain JSON.

Retries: tenacity retries only what can succeed unchanged (connection errors, 429 honouring
Retry-After, 5xx). A conflict (409) is a stale decision and goes back to the work queue; other 4xx are
reported to the caller, never retried in a loop here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay

from reconciler import __version__
from reconciler.kube import k8s
from reconciler.kube import kubeconfig as kubeconfig_loader
from reconciler.kube.ratelimit import TokenBucket
from reconciler.kube.resources import Resource
from reconciler.kube.transport import Transport
from reconciler.metrics import Metrics
from reconciler.model import JSON

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = f"acme-gateway-reconciler/{__version__}"
REQUEST_TIMEOUT = 30.0
MAX_RETRY_AFTER = 30.0


class SilentWatch(Exception):
    """A watch delivered nothing (no event, no bookmark) for `seconds`: re-open it from where it was."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no event or bookmark for {seconds:g}s")
        self.seconds = seconds


class ApiError(Exception):
    """A non-2xx answer (or no answer: status 0) from the API server."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status in {0, 429} or self.status >= 500

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: the API server refuses new content (403, not an RBAC denial)."""
        return self.status == 403 and "because it is being terminated" in self.message

    @property
    def gone(self) -> bool:
        return self.status == 410


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.transient
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


def _retry_wait(state: RetryCallState) -> float:
    """Retry-After when the server sent one, else exponential backoff with full jitter."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, ApiError) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER)
    return random.uniform(0, min(5.0, 0.1 * 2 ** (state.attempt_number - 1)))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Limits:
    """Client-side request rate (token bucket; `qps=0`: none) and how long one request is retried."""

    qps: float = 0.0
    burst: int = 40
    retry_attempts: int = 5
    retry_deadline: float = 60.0


class KubeClient:
    def __init__(self, configuration: k8s.Configuration, metrics: Metrics, limits: Limits | None = None) -> None:
        self._transport = Transport(configuration)
        self._metrics = metrics
        self._limits = limits = limits or Limits()
        self._bucket = TokenBucket(limits.qps, limits.burst) if limits.qps > 0 else None

    @classmethod
    async def connect(
        cls, metrics: Metrics, kubeconfig: str | None = None, context: str | None = None, limits: Limits | None = None
    ) -> KubeClient:
        """From `kubeconfig`, else $KUBECONFIG, in-cluster config, ~/.kube/config; a configuration that
        cannot work raises `StartupError` naming the file, the context and the fix."""
        configuration, _ = await kubeconfig_loader.load(kubeconfig, context)
        return cls(configuration, metrics, limits)

    @property
    def host(self) -> str:
        return self._transport.host

    async def close(self) -> None:
        await self._transport.close()

    # -- verbs ------------------------------------------------------------------------------------

    async def list_page(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        limit: int = 500,
        continue_token: str | None = None,
        *,
        field_selector: str | None = None,
    ) -> JSON:
        query: list[tuple[str, str]] = [("limit", str(limit))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if continue_token:
            query.append(("continue", continue_token))
        return await self._json("list", "GET", resource.path(namespace), query=query)

    async def get_path(self, path: str, *, timeout: float = REQUEST_TIMEOUT, attempts: int | None = None) -> JSON:
        """GET a path that names no resource (`/version`, discovery); `attempts=1` for no retries."""
        return await self._json("get", "GET", path, timeout=timeout, attempts=attempts)

    async def get(self, resource: Resource, namespace: str | None, name: str) -> JSON:
        return await self._json("get", "GET", resource.path(namespace, name))

    async def replace(self, resource: Resource, namespace: str | None, name: str, body: Mapping[str, Any]) -> JSON:
        """PUT: the body's metadata.resourceVersion makes it conditional (409 when it moved on)."""
        return await self._json("update", "PUT", resource.path(namespace, name), body=body)

    async def create(self, resource: Resource, namespace: str | None, body: Mapping[str, Any]) -> JSON:
        return await self._json("create", "POST", resource.path(namespace), body=body)

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> JSON:
        return await self._json(
            "patch", "PATCH", resource.path(namespace, name, subresource), body=body, content_type=content_type
        )

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> JSON:
        preconditions: JSON = {}
        if uid:
            preconditions["uid"] = uid
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": preconditions,
            "propagationPolicy": "Background",
        }
        return await self._json("delete", "DELETE", resource.path(namespace, name), body=body)

    @asynccontextmanager
    async def watch(
        self,
        resource: Resource,
        namespace: str | None,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        idle_timeout: float | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[AsyncIterator[JSON]]:
        """Opens a watch and yields an iterator of decoded events; the stream ends at the server's timeout.
        With `idle_timeout`, a stream that delivers no byte (no event, no bookmark) for that long raises
        `SilentWatch`: the connection may be open and dead (a stalled proxy, a half-open socket)."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=idle_timeout or timeout_seconds + 30)
        resp = await self._send(_Request("watch", "GET", resource.path(namespace), query), timeout)
        try:
            if resp.status != 200:
                raise await _api_error(resp)

            async def events() -> AsyncIterator[JSON]:
                while True:
                    try:
                        line = await resp.content.readline()
                    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
                        raise SilentWatch(idle_timeout or timeout_seconds + 30) from exc
                    if not line:
                        return
                    if line.strip():
                        yield json.loads(line)

            yield events()
        finally:
            resp.release()

    # -- plumbing ---------------------------------------------------------------------------------

    async def _json(
        self,
        verb: str,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = REQUEST_TIMEOUT,
        attempts: int | None = None,
    ) -> JSON:
        request = _Request(verb, method, path, query or [], body, content_type)
        attempts = attempts or self._limits.retry_attempts
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=_retry_wait,
            stop=stop_after_attempt(attempts) | stop_after_delay(self._limits.retry_deadline),
            reraise=True,
        ):
            with attempt:
                started = time.monotonic()
                resp = await self._send(request, aiohttp.ClientTimeout(total=timeout))
                try:
                    if not 200 <= resp.status < 300:
                        raise await _api_error(resp)
                    data: JSON = await resp.json(content_type=None)
                finally:
                    resp.release()
                    self._metrics.api_request_duration.labels(verb).observe(time.monotonic() - started)
                return data
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, request: _Request, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        delay = self._bucket.reserve() if self._bucket is not None else 0.0
        if delay > 0:
            self._metrics.api_throttle.observe(delay)
            await anyio.sleep(delay)
        headers = {"Accept": "application/json", "Content-Type": request.content_type, "User-Agent": USER_AGENT}
        try:
            resp = await self._transport.send(
                request.method, request.path, request.query, request.body, headers, timeout
            )
        except (TimeoutError, aiohttp.ClientError, OSError):
            self._metrics.api_requests.labels(request.verb, "error").inc()
            raise
        self._metrics.api_requests.labels(request.verb, str(resp.status)).inc()
        return resp


@dataclass(frozen=True, slots=True)
class _Request:
    verb: str  # the metric label: list, get, watch, create, patch, update, delete
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any = None
    content_type: str = "application/json"


async def _api_error(resp: aiohttp.ClientResponse) -> ApiError:
    text = await resp.text()
    reason, message = resp.reason or "", text
    try:
        status = json.loads(text)
        reason = status.get("reason") or reason
        message = status.get("message") or text
    except ValueError:
        pass
    return ApiError(resp.status, reason, message, _parse_retry_after(resp.headers.get("Retry-After")))
