"""One Certificate issued (or renewed) by the real cert-manager, measured: time to Ready, and per Challenge
when it was scheduled, wired, presented and final, and how its self-check rounds went.

Shared by the full-stack tests, ``python -m testbed.certmanager_smoke`` and ``bench.renewal_storm`` so all
three measure the same way. Time to Ready runs from just before the Certificate is created (or the renewal
is triggered) to the watch event showing Ready for the new revision.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from testbed.certificates import renew
from testbed.certmanager_log import ChallengeRounds, Classified, classify
from testbed.kube import CERTIFICATES, Kube, Obj
from testbed.timeline import ChallengeMarks, Timeline


@dataclass(frozen=True)
class ChallengeReport:
    """One Challenge of an issuance; times in seconds from the issuance's start."""

    name: str
    dns_name: str
    state: str
    created: float  # the Challenge appeared (cert-manager's orders controller made it)
    scheduled: float | None  # cert-manager's scheduler set it processing
    solver: float | None  # its solver Service appeared (cert-manager's Present)
    wired: float | None  # the gateway had somewhere to send the token
    final: float | None
    rounds: Classified
    round_starts: tuple[str, ...] = ()  # each self-check round's start; "x" marks one that failed
    reason: str = ""
    solver_services: int = 0  # more than 1: cert-manager made it a new solver Service

    def as_dict(self) -> dict[str, Any]:
        """For results files."""

        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {
            "name": self.name,
            "dns_name": self.dns_name,
            "state": self.state,
            "created_s": r(self.created),
            "scheduled_s": r(self.scheduled),
            "solver_s": r(self.solver),
            "wired_s": r(self.wired),
            "final_s": r(self.final),
            **self.rounds.as_dict(),
            "round_starts_s": list(self.round_starts),
            "reason": self.reason,
            "solver_services": self.solver_services,
        }


@dataclass
class Issuance:
    """One Certificate revision: when it was asked for and when it was Ready."""

    namespace: str
    name: str
    revision: int
    started: float  # epoch seconds
    ready_at: float | None = None
    challenges: list[ChallengeReport] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Time to Ready (inf while not Ready)."""
        return float("inf") if self.ready_at is None else self.ready_at - self.started

    @property
    def lost(self) -> int:
        """Self-check rounds lost over all its Challenges."""
        return sum(c.rounds.lost for c in self.challenges)

    def as_dict(self) -> dict[str, Any]:
        """For results files."""
        return {
            "certificate": f"{self.namespace}/{self.name}",
            "revision": self.revision,
            "time_to_ready_s": None if self.ready_at is None else round(self.seconds, 3),
            "lost_checks": self.lost,
            "challenges": [c.as_dict() for c in self.challenges],
        }


async def create(api: Kube, cert: Obj) -> Issuance:
    """Create the Certificate; its issuance starts now."""
    meta = cert["metadata"]
    started = time.time()
    await api.create(CERTIFICATES, cert, meta["namespace"])
    return Issuance(meta["namespace"], meta["name"], 1, started)


async def trigger_renewal(api: Kube, timeline: Timeline, namespace: str, name: str) -> Issuance:
    """Re-issue a Ready Certificate the way ``cmctl renew`` does; the next revision is what to wait for."""
    marks = timeline.certificates.get((namespace, name))
    revision = max(marks.ready) + 1 if marks and marks.ready else 2
    started = time.time()
    await renew(api, name, namespace)
    return Issuance(namespace, name, revision, started)


async def wait_all_ready(timeline: Timeline, issuances: Sequence[Issuance], within: float) -> None:
    """Wait (on the timeline, no API calls) until every revision is Ready; raises TimeoutError after
    ``within`` seconds. Ready times come from the watch events, so the polling interval does not matter."""
    with anyio.fail_after(within):
        while True:
            for one in issuances:
                marks = timeline.certificates.get((one.namespace, one.name))
                if one.ready_at is None and marks is not None and one.revision in marks.ready:
                    one.ready_at = marks.ready[one.revision]
            if all(one.ready_at is not None for one in issuances):
                return
            await anyio.sleep(0.1)


async def wait_ready(timeline: Timeline, issuance: Issuance, within: float) -> Issuance:
    """``wait_all_ready`` for one."""
    await wait_all_ready(timeline, [issuance], within)
    return issuance


def challenges_of(timeline: Timeline, issuance: Issuance) -> dict[str, ChallengeMarks]:
    """The Challenges cert-manager made for this revision: their names start with
    ``<certificate>-<revision>-`` (CertificateRequest ``<cert>-<rev>``, its Order, then the Challenge)."""
    prefix = f"{issuance.name}-{issuance.revision}-"
    return {
        uid: m
        for uid, m in timeline.in_namespaces([issuance.namespace]).items()
        if m.name.startswith(prefix) and m.created >= issuance.started - 1
    }


def report(
    issuance: Issuance,
    timeline: Timeline,
    rounds: Mapping[tuple[str, str], ChallengeRounds],
    retry_period: float,
) -> Issuance:
    """Fill in the per-Challenge report from the timeline and cert-manager's log rounds."""

    def rel(t: float | None) -> float | None:
        return None if t is None else t - issuance.started

    found = []
    for uid, m in sorted(challenges_of(timeline, issuance).items(), key=lambda kv: kv[1].dns_name):
        challenge_rounds = rounds.get((m.namespace, m.name)) or ChallengeRounds(m.namespace, m.name)
        found.append(
            ChallengeReport(
                name=m.name,
                dns_name=m.dns_name,
                state=m.state,
                created=m.created - issuance.started,
                scheduled=rel(m.processing),
                solver=rel(timeline.solver_created(uid)),
                wired=rel(timeline.wired(uid)),
                final=rel(m.final),
                rounds=classify(challenge_rounds, retry_period),
                round_starts=tuple(
                    f"{r.start - issuance.started:.2f}{'x' if r.failure else ''}" for r in challenge_rounds.rounds
                ),
                reason=m.reason,
                solver_services=len(timeline.solver_services.get(uid, [])),
            )
        )
    issuance.challenges = found
    return issuance
