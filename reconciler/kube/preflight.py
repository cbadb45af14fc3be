"""Start-up checks against the cluster, before any informer or the leader election starts.

Without them a missing CRD or permission shows up as informers retrying 404/403 forever and a pod that
never gets ready, and an unreachable API server as a stream of connection errors. Here each problem is
one log line with its cause and its fix, and the process exits 1 (`diagnosis.ExitCode.CLUSTER`):

1. reach the API server (`/version`), retrying for a bounded time so a slow start is not fatal;
2. discovery: every required resource is served (group, version, plural);
3. RBAC: a SelfSubjectAccessReview for every verb on every resource, in every namespace we will use.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import anyio

from reconciler.kube.client import ApiError
from reconciler.kube.diagnosis import (
    ExitCode,
    StartupError,
    forbidden,
    not_served,
    rbac_fix,
    rbac_name,
)
from reconciler.kube.resources import Resource
from reconciler.model import JSON

log = logging.getLogger(__name__)

ACCESS_REVIEWS = Resource(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", namespaced=False
)
SELF_REVIEWS = Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", namespaced=False)

ATTEMPT_TIMEOUT = 5.0
"""Seconds one `/version` request may take."""
RETRY_CAP = 5.0
REVIEWS_AT_ONCE = 8


class PreflightClient(Protocol):
    @property
    def host(self) -> str: ...

    async def get_path(self, path: str, *, timeout: float = ..., attempts: int | None = None) -> JSON: ...

    async def create(self, resource: Resource, namespace: str | None, body: Mapping[str, Any]) -> JSON: ...


@dataclass(frozen=True, slots=True)
class Requirement:
    """Verbs the reconciler uses on one resource (or subresource), and where."""

    resource: Resource
    verbs: tuple[str, ...]
    namespaces: tuple[str | None, ...] = (None,)
    """Where the verbs are used; None = all namespaces (or a cluster-scoped resource)."""
    subresource: str | None = None
    optional: bool = False
    """The cluster may not serve it (TLSRoute): not served counts as empty. Access is still required: RBAC
    answers before routing, so without it the informer would get 403, not 404."""
    lease: bool = False
    """Leader election's Lease: granted by a Role in its namespace, not by the ClusterRole."""

    @property
    def rbac_name(self) -> str:
        return rbac_name(self.resource, self.subresource)


@dataclass(frozen=True, slots=True)
class Report:
    """What the checks found (for the start-up log line)."""

    version: str
    user: str | None


def _describe(exc: BaseException) -> str:
    """A connection failure in a few words (`connection refused`, not aiohttp's repr)."""
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, OSError) and os_error.errno:
        return os.strerror(os_error.errno).lower()
    return str(exc) or type(exc).__name__


def _untrusted(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError)


async def reach(
    client: PreflightClient,
    wait: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> JSON:
    """`/version`, retried for up to `wait` seconds while there is no answer (or a 5xx: still starting)."""
    host = client.host
    deadline = clock() + wait
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        timeout = max(0.5, min(ATTEMPT_TIMEOUT, deadline - clock()))
        try:
            return await client.get_path("/version", timeout=timeout, attempts=1)
        except ApiError as exc:
            if exc.status == 401:
                raise StartupError(
                    ExitCode.CLUSTER,
                    f"the API server at {host} rejected our credentials (401 Unauthorized): the token or client "
                    "certificate in the kubeconfig (or the ServiceAccount token) is invalid or expired: renew it",
                ) from None
            if not exc.transient:
                raise StartupError(
                    ExitCode.CLUSTER,
                    f"the API server at {host} answered GET /version with {exc.status} {exc.reason}: "
                    "is the kubeconfig's server address a Kubernetes API server?",
                ) from None
            error = f"{exc.status} {exc.reason}".strip()
        except Exception as exc:
            if _untrusted(exc):
                raise StartupError(
                    ExitCode.CLUSTER,
                    f"the API server at {host} has a certificate the configured CA does not trust ({exc}): "
                    "fix the kubeconfig's certificate-authority(-data) or its server address",
                ) from None
            if not isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
                raise
            error = _describe(exc)
        remaining = deadline - clock()
        if remaining <= 0:
            raise StartupError(
                ExitCode.CLUSTER,
                f"the API server at {host} did not answer within {wait:g} s ({attempt} attempts, last: {error}): "
                "check that it is running and that this is its address (kubeconfig server, or "
                "raise RECONCILER_STARTUP_TIMEOUT for a slow start)",
            )
        if attempt == 1:
            log.info(
                "API server not answering yet; retrying",
                extra={"apiserver": host, "error": error, "waiting_up_to": f"{wait:g}s"},
            )
        await sleep(min(delay, remaining))
        delay = min(delay * 2, RETRY_CAP)


async def whoami(client: PreflightClient) -> str | None:
    """Our user name (SelfSubjectReview), for the messages; None when the server cannot tell."""
    try:
        answer = await client.create(
            SELF_REVIEWS, None, {"apiVersion": SELF_REVIEWS.api_version, "kind": "SelfSubjectReview"}
        )
    except Exception:
        return None
    name = ((answer.get("status") or {}).get("userInfo") or {}).get("username")
    return str(name) if name else None


async def _served(client: PreflightClient, group: str, version: str) -> tuple[set[str], tuple[str, ...]]:
    """The plurals one group/version serves, and (when it serves none) the versions its group does serve."""
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    try:
        listing = await client.get_path(path)
    except ApiError as exc:
        if not exc.not_found:
            raise
    else:
        return {str(r.get("name")) for r in listing.get("resources") or ()}, ()
    if not group:
        return set(), ()
    try:
        group_doc = await client.get_path(f"/apis/{group}")
    except ApiError as exc:
        if not exc.not_found:
            raise
        return set(), ()
    return set(), tuple(str(v.get("version")) for v in group_doc.get("versions") or ())


async def discover(client: PreflightClient, requirements: Iterable[Requirement]) -> list[str]:
    """One line per required resource the API server does not serve."""
    resources: dict[Resource, bool] = {}
    for req in requirements:
        resources[req.resource] = resources.get(req.resource, True) and req.optional
    served: dict[tuple[str, str], tuple[set[str], tuple[str, ...]]] = {}
    lines: list[str] = []
    for resource, optional in resources.items():
        key = (resource.group, resource.version)
        if key not in served:
            served[key] = await _served(client, *key)
        plurals, versions = served[key]
        if resource.plural in plurals:
            continue
        if optional:
            log.info("optional resource not served; treated as empty", extra={"resource": resource.plural})
            continue
        lines.append(not_served(resource, versions))
    return lines


async def _allowed(client: PreflightClient, req: Requirement, verb: str, namespace: str | None) -> bool:
    attributes = {"group": req.resource.group, "resource": req.resource.plural, "verb": verb}
    if req.subresource:
        attributes["subresource"] = req.subresource
    if namespace:
        attributes["namespace"] = namespace
    body = {
        "apiVersion": ACCESS_REVIEWS.api_version,
        "kind": ACCESS_REVIEWS.kind,
        "spec": {"resourceAttributes": attributes},
    }
    answer = await client.create(ACCESS_REVIEWS, None, body)
    return bool((answer.get("status") or {}).get("allowed"))


async def review(client: PreflightClient, requirements: Sequence[Requirement], user: str | None) -> list[str]:
    """One line per resource and namespace with verbs we may not use; one line in all when we may use none."""
    asks = [(req, verb, ns) for req in requirements for ns in req.namespaces for verb in req.verbs]
    answers: dict[tuple[Requirement, str, str | None], bool] = {}
    errors: list[ApiError] = []
    limiter = anyio.CapacityLimiter(REVIEWS_AT_ONCE)

    async def ask(req: Requirement, verb: str, ns: str | None) -> None:
        async with limiter:
            if errors:
                return
            try:
                answers[(req, verb, ns)] = await _allowed(client, req, verb, ns)
            except ApiError as exc:
                errors.append(exc)

    async with anyio.create_task_group() as tg:
        for req, verb, ns in asks:
            tg.start_soon(ask, req, verb, ns)
    if errors:
        raise errors[0]
    if asks and not any(answers.values()):
        fix = rbac_fix(user=user)
        if any(req.lease for req, _, _ in asks):
            fix += f"; and {rbac_fix(_lease_namespace(requirements), lease=True, user=user)}"
        first = asks[0]
        return [
            f"{user or 'this identity'} has none of the {len(asks)} permissions the reconciler needs "
            f"(e.g. {first[1]} {first[0].rbac_name}): {fix}"
        ]
    lines: list[str] = []
    for req in requirements:
        for ns in req.namespaces:
            denied = tuple(v for v in req.verbs if answers.get((req, v, ns)) is False)
            if denied:
                fix = rbac_fix(ns, lease=req.lease, user=user)
                lines.append(forbidden(denied, req.rbac_name, ns, fix, user))
    return lines


def _lease_namespace(requirements: Iterable[Requirement]) -> str | None:
    return next((ns for req in requirements if req.lease for ns in req.namespaces), None)


async def run(
    client: PreflightClient,
    requirements: Sequence[Requirement],
    wait: float,
) -> Report:
    """All checks; `StartupError` with every problem found (one line each)."""
    version = await reach(client, wait)
    user = await whoami(client)
    try:
        lines = await discover(client, requirements)
        lines += await review(client, requirements, user)
    except ApiError as exc:
        raise StartupError(
            ExitCode.CLUSTER,
            f"start-up checks failed at the API server {client.host}: {exc.status} {exc.reason}: {exc.message}",
        ) from None
    if lines:
        raise StartupError(ExitCode.CLUSTER, *lines)
    return Report(str(version.get("gitVersion") or "unknown"), user)
