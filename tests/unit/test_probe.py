"""The gateway probe (`reconciler/probe.py`), against respx instead of a gateway."""

from __future__ import annotations

import httpx
import pytest
import respx

from reconciler.metrics import Metrics
from reconciler.probe import Prober
from reconciler.reconcile.intents import ProbeRequest

pytestmark = pytest.mark.anyio

REQUEST = ProbeRequest(
    challenge_uid="uc",
    route_uid="ur",
    address="127.0.0.10:80",
    host="shop.example.test",
    path="/.well-known/acme-challenge/tok",
    expected="tok.thumb",
    attempts=2,
)
URL = "http://127.0.0.10:80/.well-known/acme-challenge/tok"


def count(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("acme_gateway_gateway_probes_total", {"result": result}) or 0.0


@pytest.mark.parametrize(
    ("response", "result", "ok"),
    [
        (httpx.Response(200, text="tok.thumb\n"), "ok", True),
        (httpx.Response(200, text="someone else's key"), "wrong_body", False),
        (httpx.Response(503, text="no healthy upstream"), "bad_status", False),
        (httpx.Response(302, headers={"Location": "http://elsewhere.example/"}), "bad_status", False),
    ],
)
async def test_the_probe_says_what_the_gateway_answered(response: httpx.Response, result: str, ok: bool) -> None:
    metrics = Metrics()
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(URL).mock(return_value=response)
        answer = await Prober(metrics).probe(REQUEST)
    assert route.calls.last.request.headers["Host"] == "shop.example.test", "as the ACME server asks"
    assert (answer.ok, answer.result) == (ok, result)
    assert (answer.route_uid, answer.attempts) == ("ur", 2)
    assert count(metrics, result) == 1
    if result == "bad_status":
        assert answer.detail.startswith("HTTP ")


async def test_no_answer_is_a_connection_error() -> None:
    metrics = Metrics()
    with respx.mock() as mock:
        mock.get(URL).mock(side_effect=httpx.ConnectError("connection refused"))
        answer = await Prober(metrics).probe(REQUEST)
    assert (answer.ok, answer.result) == (False, "connection_error")
    assert "refused" in answer.detail
    assert count(metrics, "connection_error") == 1
