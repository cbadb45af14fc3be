"""/readyz says why it is not ready, and an informer that fails for want of a CRD or a permission keeps
the process not ready and says so once per change, not on every retry."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest

from reconciler import server
from reconciler.kube.informer import Informer, not_ready
from reconciler.kube.resources import BACKENDS, SERVICES
from reconciler.kube.store import Change, Store, by_namespace
from reconciler.metrics import Metrics
from reconciler.model import Service
from tests.unit.fake_apiserver import Script, item, listing, serve

pytestmark = pytest.mark.anyio

NOT_FOUND = (404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "the server could not find it"})
FORBIDDEN = (403, {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "services is forbidden"})


def _ignore(_: Change[Service]) -> None:
    return None


async def run_informer(script: Script, until: Any) -> tuple[Informer[Service], list[str]]:
    """Runs an informer on the scripted server until `until(informer)`; returns it and what /readyz said
    each time the informer's problem changed."""
    metrics = Metrics()
    store: Store[Service] = Store({"namespace": by_namespace})
    said: list[str] = []
    async with serve(script, metrics) as client:
        informer = Informer(client, SERVICES, Service.from_raw, store, _ignore, metrics, backoff_base=0.01)
        async with anyio.create_task_group() as tg:
            tg.start_soon(informer.run)
            with anyio.fail_after(10):
                while not until(informer):
                    reason = not_ready([informer]) or "ready"
                    if not said or said[-1] != reason:
                        said.append(reason)
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    return informer, said


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_missing_crd_is_logged_once_and_keeps_it_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "reconciler")
    script = Script(lists=[NOT_FOUND] * 6 + [(200, listing("3", item("a", "1")))])
    informer, said = await run_informer(script, lambda i: i.synced.is_set() and len(i.store) == 1)
    message = "services/v1 is not served by the API server (is its CRD installed?); not ready, retrying"
    assert errors(caplog) == [message], "once, not once per retry"
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG and r.getMessage() == message]
    assert len(retries) == 5
    assert [r.getMessage() for r in caplog.records if r.getMessage() == "list/watch works again"] != []
    assert informer.problem is None
    assert "services/v1 is not served by the API server (is its CRD installed?)" in said
    assert not_ready([informer]) is None


async def test_a_lost_permission_then_a_missing_crd_are_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(lists=[FORBIDDEN, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, (200, listing("3"))])
    informer, _ = await run_informer(script, lambda i: i.synced.is_set())
    assert errors(caplog) == [
        "not allowed to list, watch services: apply manifests/rbac.yaml (ClusterRole acme-gateway-reconciler and "
        "its ClusterRoleBinding); not ready, retrying",
        "services/v1 is not served by the API server (is its CRD installed?); not ready, retrying",
    ]
    assert informer.problem is None


async def test_expired_credentials_are_named_as_such(caplog: pytest.LogCaptureFixture) -> None:
    unauthorized = (401, {"kind": "Status", "code": 401, "reason": "Unauthorized", "message": "Unauthorized"})
    await run_informer(Script(lists=[unauthorized, unauthorized, (200, listing("3"))]), lambda i: i.synced.is_set())
    assert errors(caplog) == [
        "the API server rejects our credentials (401 Unauthorized) for services: renew the kubeconfig's token or "
        "client certificate (or the ServiceAccount token); not ready, retrying"
    ]


async def test_a_failing_watch_after_the_first_list_makes_it_not_ready_again() -> None:
    script = Script(lists=[(200, listing("3"))], watches=[(NOT_FOUND[0], [])] * 50)
    informer, _ = await run_informer(script, lambda i: i.problem is not None)
    assert not_ready([informer]) == "services/v1 is not served by the API server (is its CRD installed?)"
    assert informer.synced.is_set()


def test_not_ready_names_failing_informers_first_then_the_ones_still_listing() -> None:
    metrics = Metrics()

    def informer(resource: Any, namespace: str | None = None) -> Informer[Any]:
        return Informer(None, resource, Service.from_raw, Store({}), _ignore, metrics, namespace=namespace)  # type: ignore[arg-type]

    services_a, services_b, backends = informer(SERVICES, "a"), informer(SERVICES, "b"), informer(BACKENDS)
    everything = [services_a, services_b, backends]
    assert not_ready(everything) == "waiting for the first list of backends, services@a, services@b"
    for i in everything:
        i.synced.set()
    assert not_ready(everything) is None
    backends.problem = "CRD for backends.gateway.envoyproxy.io/v1alpha1 is gone"
    services_a.problem = services_b.problem = "not allowed to list, watch services"
    assert not_ready(everything) == (
        "CRD for backends.gateway.envoyproxy.io/v1alpha1 is gone; not allowed to list, watch services"
    )


async def test_readyz_answers_503_with_the_reason() -> None:
    reason: list[str | None] = ["start-up checks running"]
    app = server.build_app(Metrics(), not_ready=lambda: reason[0], healthy=lambda: True)
    runner, port = await server.start("127.0.0.1", 0, app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            resp = await http.get("/readyz")
            assert (resp.status_code, resp.text) == (503, "start-up checks running\n")
            reason[0] = None
            resp = await http.get("/readyz")
            assert (resp.status_code, resp.text) == (200, "ok\n")
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await runner.cleanup()
