"""How the writer applies intents and reacts to each kind of API answer (`reconciler.writer`)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from reconciler.cache import ClusterCache
from reconciler.kube.client import ApiError
from reconciler.kube.events import EventRecorder
from reconciler.metrics import Metrics
from reconciler.model import Service
from reconciler.policy import Policy
from reconciler.reconcile.intents import Create, Delete, Kind, Patch, Refusal
from reconciler.reconcile.reasons import Refused
from reconciler.watches import watches
from reconciler.writer import Outcome, Requeue, Verb, Writer, handling

pytestmark = pytest.mark.anyio


class FakeClient:
    """Records calls; raises the queued error for the next write, else answers with `answer`."""

    def __init__(self, error: ApiError | None = None, answer: dict[str, Any] | None = None) -> None:
        self.error = error
        self.answer = answer or {}
        self.calls: list[tuple[str, Any]] = []

    async def patch(self, resource: Any, namespace: str, name: str, body: Any) -> dict[str, Any]:
        return self._answer("patch", (resource.plural, namespace, name, body))

    async def create(self, resource: Any, namespace: str | None, body: Any) -> dict[str, Any]:
        if resource.plural == "events":
            self.calls.append(("event", body))
            return {}
        return self._answer("create", (resource.plural, namespace, body))

    async def delete(self, resource: Any, namespace: str | None, name: str, uid: Any, rv: Any) -> dict[str, Any]:
        return self._answer("delete", (resource.plural, namespace, name, uid, rv))

    def _answer(self, verb: str, args: Any) -> dict[str, Any]:
        self.calls.append((verb, args))
        if self.error is not None:
            raise self.error
        return self.answer

    def events(self) -> list[dict[str, Any]]:
        return [body for verb, body in self.calls if verb == "event"]


def writer(client: FakeClient) -> tuple[Writer, Metrics, ClusterCache]:
    metrics = Metrics()
    policy = Policy()
    cache = ClusterCache(policy.solver_label)
    svc = Service.from_raw({"metadata": {"name": "s", "namespace": "ns", "uid": "u1", "resourceVersion": "7"}})
    cache.services.upsert(svc)
    table = watches(cache, policy)
    return Writer(client, cache, table, policy, EventRecorder(client, metrics, "test"), metrics), metrics, cache


PATCH = Patch(Kind.SERVICE, "ns", "s", "7", {"spec": {"type": "LoadBalancer"}}, "why")
ABOUT_SERVICE = (Kind.SERVICE, ("ns", "s"))


def written(metrics: Metrics, result: str, verb: str = "patch", kind: str = "Service") -> float:
    labels = {"kind": kind, "verb": verb, "result": result}
    return metrics.registry.get_sample_value("acme_gateway_writes_total", labels) or 0.0


# -- the answer -> outcome table ---------------------------------------------------------------------------

TERMINATING = "unable to create new content in namespace ns because it is being terminated"


@pytest.mark.parametrize(
    ("verb", "error", "outcome", "requeue", "report"),
    [
        (Verb.PATCH, None, Outcome.SUCCESS, False, False),
        (Verb.CREATE, ApiError(409, "AlreadyExists", "exists"), Outcome.ALREADY_EXISTS, False, False),
        (Verb.CREATE, ApiError(409, "Conflict", "modified"), Outcome.CONFLICT, True, False),
        (Verb.PATCH, ApiError(409, "Conflict", "modified"), Outcome.CONFLICT, True, False),
        (Verb.PATCH, ApiError(404, "NotFound", "gone"), Outcome.NOT_FOUND, False, False),
        (Verb.DELETE, ApiError(404, "NotFound", "gone"), Outcome.SUCCESS, False, False),
        (Verb.CREATE, ApiError(403, "Forbidden", TERMINATING), Outcome.NAMESPACE_TERMINATING, False, False),
        (Verb.PATCH, ApiError(403, "Forbidden", "RBAC says no"), Outcome.REJECTED, False, True),
        (Verb.PATCH, ApiError(422, "Invalid", "spec.type"), Outcome.REJECTED, False, True),
        (Verb.CREATE, ApiError(404, "NotFound", "namespace gone"), Outcome.REJECTED, False, True),
        (Verb.PATCH, ApiError(429, "TooManyRequests", "slow down"), Outcome.ERROR, True, False),
        (Verb.DELETE, ApiError(500, "InternalError", "etcd"), Outcome.ERROR, True, False),
        (Verb.CREATE, ApiError(0, "", "connection reset"), Outcome.ERROR, True, False),
    ],
)
def test_each_api_answer_has_one_handling(
    verb: Verb, error: ApiError | None, outcome: Outcome, requeue: bool, report: bool
) -> None:
    how = handling(verb, error)
    assert (how.outcome, how.requeue, how.report) == (outcome, requeue, report)
    assert (how.level == logging.ERROR) == report, "a rejected write is an error in the log; nothing else is"


# -- applying ---------------------------------------------------------------------------------------------


async def test_patch_carries_the_resource_version_it_was_computed_from() -> None:
    client = FakeClient()
    w, metrics, _ = writer(client)
    await w.apply(PATCH, ABOUT_SERVICE)
    verb, (_, _, _, body) = client.calls[0]
    assert verb == "patch"
    assert body == {"spec": {"type": "LoadBalancer"}, "metadata": {"resourceVersion": "7"}}
    assert PATCH.changes == {"spec": {"type": "LoadBalancer"}}, "the intent itself is not mutated"
    assert written(metrics, "success") == 1


async def test_the_answer_goes_into_the_cache_at_once() -> None:
    answer = {
        "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "resourceVersion": "8"},
        "spec": {"type": "LoadBalancer"},
    }
    w, _, cache = writer(FakeClient(answer=answer))
    await w.apply(PATCH, ABOUT_SERVICE)
    svc = cache.service("ns", "s")
    assert svc is not None
    assert (svc.type, svc.meta.resource_version) == ("LoadBalancer", "8")


async def test_conflict_requeues_without_an_event() -> None:
    client = FakeClient(ApiError(409, "Conflict", "the object has been modified"))
    w, metrics, _ = writer(client)
    with pytest.raises(Requeue):
        await w.apply(PATCH, ABOUT_SERVICE)
    assert written(metrics, "conflict") == 1
    assert client.events() == []


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_failure_after_retries_requeues(status: int) -> None:
    w, metrics, _ = writer(FakeClient(ApiError(status, "x", "y")))
    with pytest.raises(Requeue):
        await w.apply(PATCH, ABOUT_SERVICE)
    assert written(metrics, "error") == 1


async def test_rejected_write_is_reported_on_the_object_not_retried() -> None:
    client = FakeClient(ApiError(422, "Invalid", "spec.type: Unsupported value"))
    w, metrics, _ = writer(client)
    await w.apply(PATCH, ABOUT_SERVICE)  # no Requeue: retrying cannot help
    assert written(metrics, "rejected") == 1
    [event] = client.events()
    assert event["reason"] == "WriteRejected"
    assert event["type"] == "Warning"
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Service",
        "name": "s",
        "namespace": "ns",
        "uid": "u1",
    }


async def test_write_into_a_terminating_namespace_is_dropped_quietly() -> None:
    msg = 'backends "x" is forbidden: unable to create new content in namespace ns because it is being terminated'
    client = FakeClient(ApiError(403, "Forbidden", msg))
    w, metrics, _ = writer(client)
    create = Create(Kind.BACKEND, "ns", {"metadata": {"name": "s-backend"}}, "why")
    await w.apply(create, ABOUT_SERVICE)
    assert written(metrics, "namespace_terminating", "create", "Backend") == 1
    assert client.events() == []


async def test_delete_of_something_already_gone_counts_as_done() -> None:
    w, metrics, _ = writer(FakeClient(ApiError(404, "NotFound", "gone")))
    delete = Delete(Kind.SERVICE, "ns", "s", "u1", "7", "why")
    await w.apply(delete, ABOUT_SERVICE)
    assert written(metrics, "success", "delete") == 1


async def test_a_refusal_is_reported_once_per_object_and_reason() -> None:
    client = FakeClient()
    w, metrics, _ = writer(client)
    refusal = Refusal(Kind.SERVICE, "ns", "s", "u1", Refused.NO_CHALLENGE_OWNER, "labels without an owner")
    for _ in range(3):
        await w.report(refusal)
    assert len(client.events()) == 1
    labels = {"kind": "Service", "reason": "NoChallengeOwner"}
    assert metrics.registry.get_sample_value("acme_gateway_refusals_total", labels) == 1


async def test_create_that_finds_the_name_taken_is_not_retried() -> None:
    client = FakeClient(ApiError(409, "AlreadyExists", 'httproutes "s-acme" already exists'))
    w, metrics, _ = writer(client)
    create = Create(Kind.HTTPROUTE, "ns", {"metadata": {"name": "s-acme"}}, "why")
    await w.apply(create, ABOUT_SERVICE)  # no Requeue: no hot loop on a foreign name
    assert written(metrics, "already_exists", "create", "HTTPRoute") == 1
