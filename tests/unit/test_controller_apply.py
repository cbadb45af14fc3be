"""How the shell applies intents and reacts to each kind of API answer."""

from __future__ import annotations

import copy
from typing import Any

import anyio
import pytest

from reconciler.config import Settings
from reconciler.controller import Controller, Requeue
from reconciler.kube.client import ApiError
from reconciler.metrics import Metrics
from reconciler.model import HTTPRoute, Service
from reconciler.reconcile.intents import Create, Delete, Kind, Patch, Refusal

pytestmark = pytest.mark.anyio


class FakeClient:
    """Records calls; raises the queued error for the next write."""

    def __init__(self, error: ApiError | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, Any]] = []

    async def patch(self, resource: Any, namespace: str, name: str, body: Any) -> dict[str, Any]:
        return self._answer("patch", (resource.plural, namespace, name, body))

    async def create(self, resource: Any, namespace: str, body: Any) -> dict[str, Any]:
        if resource.plural == "events":
            self.calls.append(("event", body))
            return {}
        return self._answer("create", (resource.plural, namespace, body))

    async def delete(self, resource: Any, namespace: str, name: str, uid: str, rv: str) -> dict[str, Any]:
        return self._answer("delete", (resource.plural, namespace, name, uid, rv))

    def _answer(self, verb: str, args: Any) -> dict[str, Any]:
        self.calls.append((verb, args))
        if self.error is not None:
            raise self.error
        return {}


def controller(client: FakeClient) -> tuple[Controller, Metrics]:
    metrics = Metrics()
    ctl = Controller(client, Settings(), metrics)  # type: ignore[arg-type]
    svc = Service.from_raw({"metadata": {"name": "s", "namespace": "ns", "uid": "u1", "resourceVersion": "7"}})
    ctl.cache.services.upsert(svc)
    return ctl, metrics


PATCH = Patch(Kind.SERVICE, "ns", "s", "7", {"spec": {"type": "LoadBalancer"}}, "why")


def written(metrics: Metrics, result: str, verb: str = "patch") -> float:
    return (
        metrics.registry.get_sample_value(
            "acme_gateway_writes_total", {"kind": "Service", "verb": verb, "result": result}
        )
        or 0.0
    )


async def test_patch_carries_the_resource_version_it_was_computed_from() -> None:
    client = FakeClient()
    ctl, metrics = controller(client)
    await ctl._apply(ctl.loops["services"], ("ns", "s"), PATCH)
    verb, (_, _, _, body) = client.calls[0]
    assert verb == "patch"
    assert body == {"spec": {"type": "LoadBalancer"}, "metadata": {"resourceVersion": "7"}}
    assert PATCH.body == {"spec": {"type": "LoadBalancer"}}, "the intent itself is not mutated"
    assert written(metrics, "success") == 1


async def test_conflict_requeues_without_an_event() -> None:
    client = FakeClient(ApiError(409, "Conflict", "the object has been modified"))
    ctl, metrics = controller(client)
    with pytest.raises(Requeue):
        await ctl._apply(ctl.loops["services"], ("ns", "s"), PATCH)
    assert written(metrics, "conflict") == 1
    assert [c for c in client.calls if c[0] == "event"] == []


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_failure_after_retries_requeues(status: int) -> None:
    ctl, metrics = controller(FakeClient(ApiError(status, "x", "y")))
    with pytest.raises(Requeue):
        await ctl._apply(ctl.loops["services"], ("ns", "s"), PATCH)
    assert written(metrics, "error") == 1


async def test_rejected_write_is_reported_on_the_object_not_retried() -> None:
    client = FakeClient(ApiError(422, "Invalid", "spec.type: Unsupported value"))
    ctl, metrics = controller(client)
    await ctl._apply(ctl.loops["services"], ("ns", "s"), PATCH)  # no Requeue: retrying cannot help
    assert written(metrics, "rejected") == 1
    [(_, event)] = [c for c in client.calls if c[0] == "event"]
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
    ctl, metrics = controller(client)
    create = Create(Kind.BACKEND, "ns", {"metadata": {"name": "s-backend"}}, "why")
    await ctl._apply(ctl.loops["backends"], ("ns", "s"), create)
    assert (
        metrics.registry.get_sample_value(
            "acme_gateway_writes_total", {"kind": "Backend", "verb": "create", "result": "namespace_terminating"}
        )
        == 1
    )
    assert [c for c in client.calls if c[0] == "event"] == []


async def test_delete_of_something_already_gone_counts_as_done() -> None:
    ctl, metrics = controller(FakeClient(ApiError(404, "NotFound", "gone")))
    delete = Delete(Kind.SERVICE, "ns", "s", "u1", "7", "why")
    await ctl._apply(ctl.loops["services"], ("ns", "s"), delete)
    assert written(metrics, "success", "delete") == 1


async def test_a_refusal_is_reported_once_per_object_and_reason() -> None:
    client = FakeClient()
    ctl, metrics = controller(client)
    refusal = Refusal(Kind.SERVICE, "ns", "s", "u1", "NoChallengeOwner", "labels without an owner")
    for _ in range(3):
        await ctl._report(refusal)
    assert len([c for c in client.calls if c[0] == "event"]) == 1
    assert (
        metrics.registry.get_sample_value(
            "acme_gateway_refusals_total", {"kind": "Service", "reason": "NoChallengeOwner"}
        )
        == 1
    )


async def test_create_that_finds_the_name_taken_is_not_retried() -> None:
    client = FakeClient(ApiError(409, "AlreadyExists", 'httproutes "s-acme" already exists'))
    ctl, metrics = controller(client)
    create = Create(Kind.HTTPROUTE, "ns", {"metadata": {"name": "s-acme"}}, "why")
    await ctl._apply(ctl.loops["shadows"], ("ns", "s"), create)  # no Requeue: no hot loop on a foreign name
    assert (
        metrics.registry.get_sample_value(
            "acme_gateway_writes_total", {"kind": "HTTPRoute", "verb": "create", "result": "already_exists"}
        )
        == 1
    )


async def test_a_route_edit_requeues_the_companion_of_the_service_it_no_longer_names() -> None:
    ctl, _ = controller(FakeClient())
    raw = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "ur", "resourceVersion": "1"},
        "spec": {"rules": [{"backendRefs": [{"name": "solver", "port": 8089}]}]},
    }
    old = HTTPRoute.from_raw(copy.deepcopy(raw))
    raw["spec"]["rules"][0]["backendRefs"][0]["namespace"] = "elsewhere"
    raw["metadata"]["resourceVersion"] = "2"
    new = HTTPRoute.from_raw(raw)
    ctl._on_route("MODIFIED", old, new, False)
    with anyio.fail_after(2):
        assert await ctl.loops["shadows"].queue.get() == ("ns", "solver")
