"""Settings: every option comes from a flag or a `RECONCILER_*` environment variable.

The reconcilers receive only `reconciler.policy.Policy` (the part that shapes decisions), so they stay
pure and their tests need no environment.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reconciler.policy import Policy, PolicyFields


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Settings(BaseSettings, PolicyFields):
    """All run-time settings. Flags override environment variables (`RECONCILER_<NAME>`)."""

    model_config = SettingsConfigDict(env_prefix="RECONCILER_", extra="ignore")

    kubeconfig: str | None = Field(default=None, description="kubeconfig path; in-cluster config when unset")
    context: str | None = Field(default=None, description="kubeconfig context")
    metrics_bind_address: str = Field(default="0.0.0.0:8080", description="HOST:PORT for /metrics /healthz /readyz")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated namespaces to watch; empty = all"
    )
    solver_port_range: str = Field(default="8089-8188", description="LOW-HIGH external ports for solver Services")

    service_workers: int = Field(default=2, ge=1, le=64)
    backend_workers: int = Field(default=2, ge=1, le=64)
    route_workers: int = Field(default=2, ge=1, le=64)
    challenge_workers: int = Field(default=4, ge=1, le=64, description="workers telling Challenges and probing")
    dry_run: bool = Field(default=False, description="decide and log every write, send none")

    qps: float = Field(
        default=0.0,
        ge=0,
        description=(
            "client-side API request rate; 0: none (the API server's Priority and Fairness limits us, "
            "its 429s and Retry-After are honoured, and the workers bound the requests in flight)"
        ),
    )
    burst: int = Field(default=40, ge=1, description="client-side API request burst (with qps > 0)")
    resync_period: float = Field(default=600.0, ge=0, description="seconds between safety resyncs; 0 = off")
    watch_timeout: int = Field(default=300, ge=10, description="server-side timeout of one watch request")
    watch_idle_timeout: float = Field(
        default=90.0,
        gt=0,
        description="seconds a watch may deliver nothing (no event, no bookmark) before it is re-opened",
    )
    startup_timeout: float = Field(
        default=30.0, gt=0, description="seconds the start-up checks wait for the API server to answer"
    )

    leader_elect: bool = Field(default=False, description="take part in leader election; only the leader writes")
    leader_election_namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", "acme-gateway-reconciler"),
        description="namespace of the Lease (default: $POD_NAMESPACE)",
    )
    leader_election_id: str = Field(default="acme-gateway-reconciler", description="name of the Lease")
    lease_duration: float = Field(default=15.0, gt=0)
    renew_deadline: float = Field(default=10.0, gt=0)
    retry_period: float = Field(default=2.0, gt=0)

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @field_validator("solver_port_range")
    @classmethod
    def _check_port_range(cls, value: str) -> str:
        low, sep, high = value.partition("-")
        if not (sep and low.strip().isdigit() and high.strip().isdigit()):
            raise ValueError("solver port range must be LOW-HIGH, e.g. 8089-8188")
        if not 1 <= int(low) <= int(high) <= 65535:
            raise ValueError("solver port range must satisfy 1 <= LOW <= HIGH <= 65535")
        return f"{int(low)}-{int(high)}"

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log level must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @field_validator("metrics_bind_address")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("metrics bind address must be HOST:PORT")
        return value

    @model_validator(mode="after")
    def _check_election_timing(self) -> Settings:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        return self

    def bind_host_port(self) -> tuple[str, int]:
        host, _, port = self.metrics_bind_address.rpartition(":")
        return host or "0.0.0.0", int(port)

    def policy(self) -> Policy:
        low, _, high = self.solver_port_range.partition("-")
        shared = {name: getattr(self, name) for name in PolicyFields.model_fields}
        return Policy(**shared, solver_ports=(int(low), int(high)))
