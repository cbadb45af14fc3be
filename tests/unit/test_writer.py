"""How the writer applies intents and reacts to each kind of API answer (`reconciler.writer`)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from reconciler.cache import ClusterCache
from reconciler.kube.client import ApiError
from reconciler.kube.events import EventRecorder
from reconciler.kube.resources import HTTPROUTES
from reconciler.metrics import Metrics
from reconciler.model import Service
from reconciler.outcomes import Outcome, Requeue, Verb, handling
from reconciler.policy import Policy
from reconciler.reconcile.intents import Create, Delete, Kind, Notice, Patch, Refusal, Subject
from reconciler.reconcile.reasons import Refused
from reconciler.watches import watches
from reconciler.writer import Writer

pytestmark = pytest.mark.anyio


class FakeClient:
    """Records calls; raises the queued error for the next write, else answers with `answer`."""

    def __init__(self, error: ApiError | None = None, answer: dict[str, Any] | None = None) -> None:
        self.error = error
        self.answer = answer or {}
        self.calls: list[tuple[str, Any]] = []
        self.listed: list[dict[str, Any]] = []
        self.selectors: list[str | None] = []
        self.live: dict[str, Any] | None = None
        """What a GET answers (None: 404)."""

    async def list_page(
        self, resource: Any, namespace: str | None = None, *, field_selector: str | None = None, limit: int = 500
    ) -> dict[str, Any]:
        self.selectors.append(field_selector)
        return {"items": self.listed}

    async def get(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any]:
        self.calls.append(("get", (resource.plural, namespace, name)))
        if self.live is None:
            raise ApiError(404, "NotFound", f"{name} not found")
        return self.live

    async def patch(
        self, resource: Any, namespace: str, name: str, body: Any, *, subresource: str | None = None
    ) -> dict[str, Any]:
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


def writer(client: FakeClient, dry_run: bool = False) -> tuple[Writer, Metrics, ClusterCache]:
    metrics = Metrics()
    policy = Policy()
    cache = ClusterCache(policy.solver_label)
    svc = Service.from_raw({"metadata": {"name": "s", "namespace": "ns", "uid": "u1", "resourceVersion": "7"}})
    cache.services.upsert(svc)
    table = watches(cache, policy)
    recorder = EventRecorder(client, metrics, "test", dry_run=dry_run)
    return Writer(client, cache, table, policy, recorder, metrics, dry_run=dry_run), metrics, cache


PATCH = Patch(Kind.SERVICE, "ns", "s", "7", {"spec": {"type": "LoadBalancer"}}, "why")
ABOUT_SERVICE = (Kind.SERVICE, ("ns", "s"))


def written(metrics: Metrics, result: str, verb: str = "patch", kind: str = "Service", dry_run: str = "false") -> float:
    labels = {"kind": kind, "verb": verb, "result": result, "dry_run": dry_run}
    return metrics.registry.get_sample_value("acme_gateway_writes_total", labels) or 0.0


# -- the answer -> outcome table ---------------------------------------------------------------------------

TERMINATING = "unable to create new content in namespace ns because it is being terminated"
RBAC_DENIED = (
    'services "s" is forbidden: User "system:serviceaccount:agr:agr" cannot patch resource "services" in API '
    'group "" in the namespace "ns"'
)
WEBHOOK_DENIED = 'admission webhook "policy.example.com" denied the request: Backends may not point outside'


@pytest.mark.parametrize(
    ("verb", "error", "outcome", "requeue", "report"),
    [
        (Verb.PATCH, None, Outcome.SUCCESS, False, False),
        (Verb.CREATE, ApiError(409, "AlreadyExists", "exists"), Outcome.ALREADY_EXISTS, False, False),
        (Verb.CREATE, ApiError(409, "Conflict", "modified"), Outcome.CONFLICT, True, False),
        (Verb.PATCH, ApiError(409, "Conflict", "modified"), Outcome.CONFLICT, True, False),
        (Verb.PATCH, ApiError(404, "NotFound", "gone"), Outcome.NOT_FOUND, False, False),
        (Verb.DELETE, ApiError(404, "NotFound", "gone"), Outcome.NOT_FOUND, False, False),
        (Verb.CREATE, ApiError(403, "Forbidden", TERMINATING), Outcome.NAMESPACE_TERMINATING, False, False),
        (Verb.PATCH, ApiError(403, "Forbidden", RBAC_DENIED), Outcome.FORBIDDEN, True, False),
        (Verb.CREATE, ApiError(403, "Forbidden", WEBHOOK_DENIED), Outcome.REJECTED, False, True),
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
    assert (how.level == logging.ERROR) == (report or outcome is Outcome.FORBIDDEN), "errors: rejected, forbidden"


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


async def test_delete_of_something_already_gone_is_counted_as_not_found_and_forgotten() -> None:
    w, metrics, cache = writer(FakeClient(ApiError(404, "NotFound", "gone")))
    delete = Delete(Kind.SERVICE, "ns", "s", "u1", "7", "why")
    assert await w.apply(delete, ABOUT_SERVICE) is Outcome.NOT_FOUND
    assert written(metrics, "not_found", "delete") == 1
    assert written(metrics, "success", "delete") == 0, "a 404 is not a delete of ours"
    assert cache.service("ns", "s") is None


async def test_a_deleted_object_leaves_the_cache_at_once_so_it_is_deleted_once() -> None:
    w, _, cache = writer(FakeClient())
    delete = Delete(Kind.SERVICE, "ns", "s", "u1", "7", "why")
    assert await w.apply(delete, ABOUT_SERVICE) is Outcome.SUCCESS
    assert cache.service("ns", "s") is None, "the next decision must not see it and delete it again"


async def test_a_delete_of_another_object_of_that_name_leaves_the_cache_alone() -> None:
    w, _, cache = writer(FakeClient())
    await w.apply(Delete(Kind.SERVICE, "ns", "s", "another-uid", "7", "why"), ABOUT_SERVICE)
    assert cache.service("ns", "s") is not None


async def test_a_rejected_write_is_not_sent_again_unchanged() -> None:
    client = FakeClient(ApiError(422, "Invalid", "spec.clusterIP: None"))
    w, metrics, _ = writer(client)
    for _ in range(5):
        await w.apply(PATCH, ABOUT_SERVICE)
    assert len([c for c in client.calls if c[0] == "patch"]) == 1, "one rejection, no retry loop"
    assert len(client.events()) == 1
    assert written(metrics, "not_sent") == 4
    changed = Patch(Kind.SERVICE, "ns", "s", "8", {"spec": {"type": "LoadBalancer"}}, "why")
    await w.apply(changed, ABOUT_SERVICE)
    assert len([c for c in client.calls if c[0] == "patch"]) == 2, "a new version of the object is tried"


async def test_a_refusal_is_shown_on_every_object_it_names_and_counted_once() -> None:
    client = FakeClient()
    w, metrics, _ = writer(client)
    challenge = Subject(Kind.CHALLENGE, "ns", "ch", "uc")
    refusal = Refusal(Kind.SERVICE, "ns", "s", "u1", Refused.DOMAIN_CLAIMED, "claimed", (challenge,))
    await w.report(refusal)
    await w.report(refusal)
    involved = [(e["involvedObject"]["kind"], e["involvedObject"]["apiVersion"]) for e in client.events()]
    assert involved == [("Service", "v1"), ("Challenge", "acme.cert-manager.io/v1")]
    labels = {"kind": "Service", "reason": "DomainClaimed"}
    assert metrics.registry.get_sample_value("acme_gateway_refusals_total", labels) == 1


async def test_an_event_message_is_bounded() -> None:
    client = FakeClient()
    w, _, _ = writer(client)
    await w.report(Refusal(Kind.SERVICE, "ns", "s", "u1", Refused.INVALID_ROUTE_PORT, "x" * 200_000))
    (event,) = client.events()
    assert len(event["message"]) <= 1024


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


async def test_a_dry_run_sends_nothing_and_counts_each_write_it_would_make_once() -> None:
    client = FakeClient()
    w, metrics, cache = writer(client, dry_run=True)
    for _ in range(3):
        assert await w.apply(PATCH, ABOUT_SERVICE) is Outcome.DRY_RUN
    await w.report(Refusal(Kind.SERVICE, "ns", "s", "u1", Refused.NO_CHALLENGE_OWNER, "labels without an owner"))
    assert client.calls == [], "no write and no Event"
    assert written(metrics, "dry_run", dry_run="true") == 1
    assert written(metrics, "success") == 0
    svc = cache.service("ns", "s")
    assert svc is not None
    assert svc.meta.resource_version == "7", "nothing written through: nothing was written"


async def test_a_notice_can_cite_the_platforms_own_events_about_another_object() -> None:
    client = FakeClient()
    client.listed = [
        {"reason": "PortInUse", "message": "port 8089 is taken on EIP default-gw", "source": {"component": "kube-dc"}},
        {"reason": "Mine", "message": "ours", "source": {"component": "acme-gateway-reconciler"}},
    ]
    w, _, _ = writer(client)
    service = Subject(Kind.SERVICE, "ns", "s", "u1")
    challenge = Subject(Kind.CHALLENGE, "ns", "ch", "uc")
    await w.notify(Notice((challenge,), "Warning", "NoAddress", "no address within 30s", cite=service))
    (event,) = client.events()
    assert (
        event["message"] == "no address within 30s; the platform says: PortInUse: port 8089 is taken on EIP default-gw"
    )
    assert client.selectors == ["involvedObject.uid=u1"]


async def test_a_writes_answer_wakes_the_triggers_as_its_watch_event_would() -> None:
    """The watch event of a version already in the cache changes nothing and wakes nothing (no work for
    status churn), so the write-through itself must wake what depends on the written object."""
    answer = {"metadata": {"name": "s-backend", "namespace": "ns", "uid": "ub", "resourceVersion": "9"}}
    metrics = Metrics()
    policy = Policy()
    cache = ClusterCache(policy.solver_label)
    seen: list[tuple[str, str, str]] = []
    client = FakeClient(answer=answer)
    w = Writer(
        client,
        cache,
        watches(cache, policy),
        policy,
        EventRecorder(client, metrics, "test"),
        metrics,
        on_change=lambda watch, change: seen.append((watch.resource.plural, change.type.value, change.obj.meta.name)),
    )
    await w.apply(Create(Kind.BACKEND, "ns", {"metadata": {"name": "s-backend"}}, "why"), ABOUT_SERVICE)
    assert seen == [("backends", "ADDED", "s-backend")]
    await w.apply(Delete(Kind.BACKEND, "ns", "s-backend", "ub", "9", "why"), ABOUT_SERVICE)
    assert seen[-1] == ("backends", "DELETED", "s-backend")


OWNED_ROUTE = Create(
    Kind.HTTPROUTE,
    "ns",
    {
        "metadata": {
            "name": "s-acme",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "s", "uid": "u1", "controller": True}],
        }
    },
    "why",
)


async def test_an_object_deleted_with_its_owner_is_not_made_again() -> None:
    """The garbage collector deleted our route because its Service is gone, and the route's event came
    before the Service's: one GET of the owner, no create, and the Service leaves the cache at once."""
    client = FakeClient()
    w, metrics, cache = writer(client)
    w.saw_deleted(HTTPROUTES, ("ns", "s-acme"))
    assert await w.apply(OWNED_ROUTE, ABOUT_SERVICE) is Outcome.OWNER_GONE
    assert [verb for verb, _ in client.calls] == ["get"]
    assert cache.service("ns", "s") is None
    assert written(metrics, "owner_gone", "create", "HTTPRoute") == 1


async def test_a_create_after_a_deletion_goes_ahead_while_the_owner_lives() -> None:
    client = FakeClient()
    client.live = {"metadata": {"name": "s", "namespace": "ns", "uid": "u1"}}
    w, _, cache = writer(client)
    w.saw_deleted(HTTPROUTES, ("ns", "s-acme"))
    assert await w.apply(OWNED_ROUTE, ABOUT_SERVICE) is Outcome.SUCCESS
    assert [verb for verb, _ in client.calls] == ["get", "create"]
    assert cache.service("ns", "s") is not None
    # A replacement Service of the same name (another uid) does not own it: not made.
    client.live = {"metadata": {"name": "s", "namespace": "ns", "uid": "u2"}}
    w.saw_deleted(HTTPROUTES, ("ns", "s-acme"))
    assert await w.apply(OWNED_ROUTE, ABOUT_SERVICE) is Outcome.OWNER_GONE


async def test_a_first_create_costs_no_read() -> None:
    client = FakeClient()
    w, _, _ = writer(client)
    assert await w.apply(OWNED_ROUTE, ABOUT_SERVICE) is Outcome.SUCCESS
    assert [verb for verb, _ in client.calls] == ["create"]


async def test_a_write_forbidden_to_the_reconciler_is_retried_and_not_remembered_as_rejected() -> None:
    """A restarting API server answers 403 until its authorizer has synced: the write goes back to the queue
    with back-off, and the next attempt is sent (a rejected write would not be, for 10 minutes)."""
    client = FakeClient(ApiError(403, "Forbidden", RBAC_DENIED))
    w, metrics, _ = writer(client)
    with pytest.raises(Requeue) as again:
        await w.apply(PATCH, ABOUT_SERVICE)
    assert again.value.at_least >= 1.0, "not retried at the queue's millisecond backoff: every write meets it"
    client.error = None
    assert await w.apply(PATCH, ABOUT_SERVICE) is Outcome.SUCCESS
    assert written(metrics, "forbidden") == 1
    assert client.events() == [], "the tenant is not told about the reconciler's permissions"
