"""The alert rules against the real thing: a real Prometheus (built from the Go module proxy) scrapes a
reconciler running on the test bed, and AcmeGatewayChallengeFailureRatioHigh fires for the project whose
challenge fails, and only for it.

The test's copy of the rules differs from manifests/monitoring/prometheusrule.yaml in one way: every `for:`
is 0s, so an alert fires at the first evaluation that sees the failure (scrape and evaluation every second)
instead of after minutes. Everything else (expressions, labels, annotations) is the manifest's.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest

from testbed.certmanager import set_state
from testbed.harness import CertManager, ProjectFactory, StartReconciler
from testbed.opstools import Prometheus, find_ops_tools, rule_file_text
from testbed.polling import wait_for

pytestmark = pytest.mark.anyio

ALERT = "AcmeGatewayChallengeFailureRatioHigh"


def _rules_without_for() -> str:
    rules, count = re.subn(r"(?m)^(\s+for:) \S+$", r"\1 0s", rule_file_text())
    assert count >= 8, "expected a `for:` per alert"
    return rules


async def _active(prom: Prometheus, project: str) -> list[dict[str, Any]]:
    alerts = await anyio.to_thread.run_sync(prom.alerts)
    return [a for a in alerts if a["labels"].get("alertname") == ALERT and a["labels"].get("project") == project]


async def test_failure_ratio_alert_fires_for_a_failing_challenge(
    project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    await anyio.to_thread.run_sync(find_ops_tools)
    failing, healthy = await project("cloud"), await project("cloud")
    rec = await reconciler(args=["--namespaces", f"{failing.namespace},{healthy.namespace}"])
    target = rec.base_url.removeprefix("http://")
    prom = Prometheus(targets=[target], rules=_rules_without_for())
    await anyio.to_thread.run_sync(prom.start)
    try:
        failing_label = f"{failing.org_namespace}/{failing.name}"
        healthy_label = f"{healthy.org_namespace}/{healthy.name}"

        # Prometheus scrapes the reconciler before anything fails, and no rule errors on its real metrics.
        async def scraped() -> bool:
            up = await anyio.to_thread.run_sync(prom.query, 'up{job="acme-gateway-reconciler"}')
            return [float(s["value"][1]) for s in up] == [1.0]

        await wait_for(scraped, within=30, interval=0.5, what="Prometheus scraping the reconciler")
        assert await _active(prom, failing_label) == []

        # One challenge fails in one project; one in the other project succeeds.
        bad = await cert_manager.challenge(failing.namespace, "broken.example.test", finalizer=False)
        good = await cert_manager.challenge(healthy.namespace, "fine.example.test", finalizer=False)
        await set_state(cert_manager.api, failing.namespace, bad["metadata"]["name"], "invalid", "self check failed")
        await set_state(cert_manager.api, healthy.namespace, good["metadata"]["name"], "valid")

        async def firing() -> list[dict[str, Any]] | None:
            found = [a for a in await _active(prom, failing_label) if a["state"] == "firing"]
            return found or None

        [alert] = await wait_for(firing, within=60, interval=0.5, what=f"{ALERT} firing for {failing_label}")
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["summary"] == f"ACME challenges failing in project {failing_label}"
        assert alert["annotations"]["description"].startswith("100% of the ACME HTTP-01 challenges")
        assert alert["annotations"]["runbook_url"] == "docs/operators.md#acmegatewaychallengefailureratiohigh"

        # The same answer through the ALERTS series, and the healthy project (a success counted) is silent.
        series = await anyio.to_thread.run_sync(prom.query, f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}')
        assert {s["metric"]["project"] for s in series} == {failing_label}
        counted = await anyio.to_thread.run_sync(
            prom.query, f'acme_gateway_challenge_outcomes_total{{project="{healthy_label}", outcome="success"}}'
        )
        assert [float(s["value"][1]) for s in counted] == [1.0]
        assert await _active(prom, healthy_label) == []
        unhealthy = [r for r in await anyio.to_thread.run_sync(prom.rules_health) if r[1] != "ok"]
        assert unhealthy == [], unhealthy
    finally:
        await anyio.to_thread.run_sync(prom.stop)
