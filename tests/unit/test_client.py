"""The API client: retries only what can succeed unchanged, reports the rest."""

from __future__ import annotations

import json

import pytest

from reconciler.kube.client import MERGE_PATCH, ApiError
from reconciler.kube.resources import SERVICES
from reconciler.metrics import Metrics
from tests.unit.fake_apiserver import Script, serve

pytestmark = pytest.mark.anyio

OK = {"metadata": {"name": "s", "resourceVersion": "2"}}


async def test_transient_errors_are_retried_honouring_retry_after() -> None:
    script = Script(patches=[(429, {"kind": "Status"}), (503, {"kind": "Status"}), (200, OK)])
    metrics = Metrics()
    async with serve(script, metrics) as client:
        answer = await client.patch(SERVICES, "ns", "s", {"metadata": {"resourceVersion": "1"}})
    assert answer == OK
    codes = {
        c: metrics.registry.get_sample_value("acme_gateway_api_requests_total", {"verb": "patch", "code": c})
        for c in ("429", "503", "200")
    }
    assert codes == {"429": 1, "503": 1, "200": 1}
    _verb, sent = script.requests[-1]
    assert sent["content-type"] == MERGE_PATCH
    assert json.loads(sent["body"]) == {"metadata": {"resourceVersion": "1"}}


@pytest.mark.parametrize("status", [409, 422, 403, 404])
async def test_client_errors_are_not_retried(status: int) -> None:
    script = Script(patches=[(status, {"kind": "Status", "reason": "R", "message": "no"}), (200, OK)])
    async with serve(script, Metrics()) as client:
        with pytest.raises(ApiError) as caught:
            await client.patch(SERVICES, "ns", "s", {})
    assert caught.value.status == status
    assert caught.value.message == "no"
    assert len(script.patches) == 1, "exactly one request was sent"
