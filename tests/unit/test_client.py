"""The API client: retries only what can succeed unchanged, reports the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s_client

from reconciler.kube.client import MERGE_PATCH, USER_AGENT, ApiError, Limits
from reconciler.kube.resources import SERVICES
from reconciler.kube.transport import proxy_for
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


async def test_the_token_is_read_through_the_refresh_hook_on_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Service-account tokens rotate: each request asks the configuration's hook, as kubernetes-asyncio's
    own request path does; a ~/.netrc entry for the server changes nothing."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    tokens = iter(["Bearer one", "Bearer two"])

    def configure(configuration: k8s_client.Configuration) -> None:
        configuration.api_key["BearerToken"] = "Bearer zero"

        def refresh(c: k8s_client.Configuration, *_: object) -> None:
            c.api_key["BearerToken"] = next(tokens)

        configuration.refresh_api_key_hook = refresh

    script = Script(patches=[(200, OK), (200, OK)])
    async with serve(script, Metrics(), configure) as client:
        await client.patch(SERVICES, "ns", "s", {})
        await client.patch(SERVICES, "ns", "s", {})
    assert [sent["authorization"] for _, sent in script.requests] == ["Bearer one", "Bearer two"]
    assert {sent["user-agent"] for _, sent in script.requests} == {USER_AGENT}


@pytest.mark.parametrize(
    ("host", "configured", "environ", "no_proxy", "expected"),
    [
        (
            "https://10.0.0.1:6443",
            "http://kubeconfig-proxy:3128",
            {"https": "http://env:3128"},
            "",
            "http://kubeconfig-proxy:3128",
        ),
        ("https://10.0.0.1:6443", None, {"https": "http://env:3128"}, "", "http://env:3128"),
        ("https://10.0.0.1:6443", None, {"https": "http://env:3128"}, "10.0.0.1", None),
        ("https://kubernetes.default.svc", None, {"https": "http://env:3128"}, ".svc", None),
        ("http://127.0.0.1:8080", None, {"https": "http://env:3128"}, "", None),
        ("https://10.0.0.1:6443", None, {}, "", None),
    ],
)
def test_the_proxy_is_resolved_once_from_kubeconfig_then_environment(
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    configured: str | None,
    environ: dict[str, str],
    no_proxy: str,
    expected: str | None,
) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    if no_proxy:
        monkeypatch.setenv("no_proxy", no_proxy)
    assert proxy_for(host, configured, environ) == expected


async def test_no_client_side_limit_by_default_and_a_token_bucket_when_asked() -> None:
    """A renewal storm must not queue on a local bucket: the API server's Priority and Fairness limits us.
    With `--qps` the bucket is back (for API servers without it)."""
    throttled = "acme_gateway_api_client_rate_limiter_seconds_count"
    metrics = Metrics()
    async with serve(Script(patches=[(200, OK)] * 30), metrics) as client:
        for _ in range(30):
            await client.patch(SERVICES, "ns", "s", {})
    assert (metrics.registry.get_sample_value(throttled) or 0) == 0
    metrics = Metrics()
    async with serve(Script(patches=[(200, OK)] * 30), metrics, limits=Limits(qps=200, burst=5)) as client:
        for _ in range(30):
            await client.patch(SERVICES, "ns", "s", {})
    assert (metrics.registry.get_sample_value(throttled) or 0) >= 10
