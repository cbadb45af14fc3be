"""Entry point and settings: flags, environment variables, validation errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import __version__
from reconciler.cli import _parser, load_settings, main
from reconciler.config import Settings
from reconciler.log import JsonFormatter, TextFormatter
from reconciler.policy import BackendMode

ROOT = Path(__file__).resolve().parents[2]


def test_version_and_help_run_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "--version"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0
    assert __version__ in out.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0
    for flag in ("--kubeconfig", "--metrics-bind-address", "--backend-mode", "--namespaces", "--log-format"):
        assert flag in helped.stdout


def test_environment_sets_every_option_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_BACKEND_MODE", "acme")
    monkeypatch.setenv("RECONCILER_NAMESPACES", "a, b,,c")
    monkeypatch.setenv("RECONCILER_EIP_NAME", "from-env")
    monkeypatch.setenv("RECONCILER_QPS", "5")
    monkeypatch.setenv("RECONCILER_CREATE_BACKEND_ANNOTATION", "example.com/backend")
    settings = load_settings(_parser().parse_args(["run", "--eip-name", "from-flag"]))
    assert settings.backend_mode is BackendMode.ACME
    assert settings.namespaces == ["a", "b", "c"]
    assert settings.eip_name == "from-flag"
    assert settings.qps == 5
    policy = settings.policy()
    assert policy.eip_name == "from-flag"
    assert policy.create_backend_annotation == "example.com/backend"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--metrics-bind-address", "nonsense"],
        ["run", "--log-level", "LOUD"],
        ["run", "--service-workers", "0"],
        ["run", "--qps", "-1"],
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert "invalid settings" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "run" in capsys.readouterr().out


def test_bind_address_parsing() -> None:
    assert Settings(metrics_bind_address=":9090").bind_host_port() == ("0.0.0.0", 9090)
    assert Settings(metrics_bind_address="127.0.0.1:0").bind_host_port() == ("127.0.0.1", 0)


def test_log_lines_carry_object_and_reason() -> None:
    record = logging.LogRecord("reconciler", logging.INFO, __file__, 1, "patched Service", (), None)
    record.object = "ns/svc"
    record.reason = "solver in a cloud project"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "patched Service"
    assert doc["object"] == "ns/svc"
    assert doc["level"] == "info"
    text = TextFormatter().format(record)
    assert 'object=ns/svc reason="solver in a cloud project"' in text


def test_leader_election_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    settings = load_settings(_parser().parse_args(["run", "--leader-elect"]))
    assert settings.leader_elect is True
    assert settings.leader_election_namespace == "ops"
    assert load_settings(_parser().parse_args(["run"])).leader_elect is False


def test_leader_election_timings_must_nest(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_RENEW_DEADLINE", "20")
    assert main(["run", "--leader-elect"]) == 2
    assert "retry_period < renew_deadline < lease_duration" in capsys.readouterr().err
