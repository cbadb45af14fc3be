"""The operator tools the monitoring kit and the Helm chart are tested with, and a real Prometheus.

``hack/build-ops-tools.sh`` builds Prometheus, promtool, Helm and kustomize from the Go module proxy (cached by
version) and copies prometheus-operator's ServiceMonitor and PrometheusRule CRDs; this module runs it and
wraps the tools: rule extraction from the PrometheusRule, ``kustomize build``, ``helm template``, and
``Prometheus``, a test-bed component scraping loopback targets with the project's rules.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import httpx
import yaml

from testbed.binaries import run_build_script
from testbed.errors import ComponentError
from testbed.paths import REPO_ROOT
from testbed.ports import free_loopback_ports
from testbed.process import Component

OPS_TOOLS_BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-ops-tools.sh"
RULES_SCRIPT: Final = REPO_ROOT / "hack" / "prometheusrule-to-rules.py"
MANIFESTS: Final = REPO_ROOT / "manifests"
MONITORING: Final = MANIFESTS / "monitoring"
PROMETHEUS_RULE: Final = MONITORING / "prometheusrule.yaml"
DASHBOARD: Final = MONITORING / "dashboards" / "acme-gateway-reconciler.json"
CHART: Final = REPO_ROOT / "charts" / "acme-gateway-reconciler"
RECONCILER_JOB: Final = "acme-gateway-reconciler"

Obj = dict[str, Any]


class OpsToolError(ComponentError):
    """An operator tool could not be built or run, or Prometheus did not come up."""


@dataclass
class OpsTools:
    """The directory ``hack/build-ops-tools.sh`` prints: links to each tool's versioned cache directory."""

    root: Path
    prometheus: Path = field(init=False)
    promtool: Path = field(init=False)
    helm: Path = field(init=False)
    kustomize: Path = field(init=False)
    monitoring_crds: list[Path] = field(init=False)  # prometheus-operator's ServiceMonitor and PrometheusRule

    def __post_init__(self) -> None:
        self.prometheus, self.promtool = self.root / "prometheus", self.root / "promtool"
        self.helm, self.kustomize = self.root / "helm", self.root / "kustomize"
        self.monitoring_crds = sorted((self.root / "monitoring-crds").glob("*.yaml"))


_tools: OpsTools | None = None


def find_ops_tools() -> OpsTools:
    """Run the build script once per process (immediate when cached; minutes cold) and check its output."""
    global _tools  # noqa: PLW0603 - one build check per test session
    if _tools is None:
        tools = OpsTools(run_build_script(OPS_TOOLS_BUILD_SCRIPT, error=OpsToolError))
        for path in (tools.prometheus, tools.promtool, tools.helm, tools.kustomize):
            if not os.access(path, os.X_OK):
                raise OpsToolError(f"{path} missing after {OPS_TOOLS_BUILD_SCRIPT}")
        if len(tools.monitoring_crds) != 2:
            raise OpsToolError(f"prometheus-operator CRDs missing in {tools.root}")
        _tools = tools
    return _tools


def run_tool(argv: Sequence[str | Path], cwd: Path = REPO_ROOT, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; with ``check``, a non-zero exit raises ``OpsToolError`` carrying its output."""
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise OpsToolError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


# --- rules -----------------------------------------------------------------------------------------------


def rule_file_text(prometheus_rule: Path = PROMETHEUS_RULE) -> str:
    """The PrometheusRule's ``spec`` as a Prometheus rule file, by the same script operators use."""
    return run_tool([sys.executable, RULES_SCRIPT, prometheus_rule]).stdout


def rule_groups(prometheus_rule: Path = PROMETHEUS_RULE) -> list[Obj]:
    """The rule groups of the PrometheusRule."""
    groups: list[Obj] = yaml.safe_load(rule_file_text(prometheus_rule))["groups"]
    return groups


def alerting_rules(prometheus_rule: Path = PROMETHEUS_RULE) -> list[Obj]:
    """Every alerting rule, in file order."""
    return [r for g in rule_groups(prometheus_rule) for r in g["rules"] if "alert" in r]


# --- rendering -------------------------------------------------------------------------------------------


def parse_documents(text: str) -> list[Obj]:
    """The non-empty YAML documents of a rendering."""
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize_build(directory: Path) -> list[Obj]:
    """``kustomize build`` of a kustomization directory."""
    return parse_documents(run_tool([find_ops_tools().kustomize, "build", directory]).stdout)


def helm_template(
    values: Mapping[str, Any] | None = None, *, chart: Path = CHART, extra: Sequence[str] = ()
) -> list[Obj]:
    """``helm template`` of the chart (CRDs included), with ``values`` as a values file."""
    argv: list[str | Path] = [find_ops_tools().helm, "template", "acme-gateway-reconciler", chart, "--include-crds"]
    with tempfile.TemporaryDirectory(prefix="agr-helm-") as tmp:
        if values:
            values_file = Path(tmp) / "values.yaml"
            values_file.write_text(yaml.safe_dump(dict(values)))
            argv += ["--values", values_file]
        return parse_documents(run_tool([*argv, *extra]).stdout)


# --- Prometheus ------------------------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class Prometheus(Component):
    """A real Prometheus on 127.0.0.1 scraping ``targets`` as job ``acme-gateway-reconciler`` and evaluating
    ``rules`` (rule-file text), with short intervals for tests. Its TSDB lives in the component's temp dir."""

    name: ClassVar[str] = "prometheus"
    error: ClassVar[type[ComponentError]] = OpsToolError

    targets: list[str]
    rules: str
    interval: str = "1s"
    ready_timeout: float = 30.0
    port: int = field(init=False, default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        tools = find_ops_tools()
        (self.data_dir / "rules.yaml").write_text(self.rules)
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": ["rules.yaml"],
            "scrape_configs": [{"job_name": RECONCILER_JOB, "static_configs": [{"targets": self.targets}]}],
        }
        (self.data_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_loopback_ports(1)[0]
        proc = self.spawn(
            "prometheus",
            [
                str(tools.prometheus),
                f"--config.file={self.data_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")},
        )
        self.wait_ready(proc, f"prometheus /-/ready on port {self.port}", self._ready, self.ready_timeout)

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=2, trust_env=False).status_code == 200

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        resp = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5, trust_env=False)
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise OpsToolError(f"prometheus /api/v1/{path}: {resp.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[Obj]:
        """An instant query's vector."""
        result: list[Obj] = self.api("query", {"query": expr})["result"]
        return result

    def alerts(self) -> list[Obj]:
        """Active alerts (pending and firing)."""
        alerts: list[Obj] = self.api("alerts")["alerts"]
        return alerts

    def rules_health(self) -> list[tuple[str, str, str]]:
        """(rule name, health, last error) of every loaded rule."""
        groups = self.api("rules")["groups"]
        return [(r["name"], r.get("health", ""), r.get("lastError", "")) for g in groups for r in g.get("rules", [])]
