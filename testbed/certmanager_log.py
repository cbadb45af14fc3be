"""What the real cert-manager's log says about HTTP-01 self-checks: rounds, GETs, route reverts, lost checks.

At verbosity 4 cert-manager logs every self-check round of a Challenge (a ``Present()`` that may revert its
HTTPRoute, then up to 5 GETs 2 s apart that must all pass) with the Challenge's ``resource_name`` and
``resource_namespace``. klog stamps lines with the local wall-clock time of day only; ``rounds()`` turns
them into epoch seconds so they line up with watch events and the tests' own clocks.

A failed round costs a retry period (10 s upstream). The rounds cert-manager runs right after it created
the solver route fail by design (nothing can route and program a route in 20 ms; each status write re-queues
the Challenge for another immediate round), so ``classify`` only counts a failed round as *lost* when it
came after the first retry-period wait: then the route had had seconds to be wired and programmed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

# klog's text format: `I1202 05:47:38.101949    8686 file.go:171] "message" key=value key="quoted value"`
_KLOG_LINE: Final = re.compile(
    r'^(?P<level>[IWEF])\d{4} (?P<time>[\d:.]+)\s+\d+ (?P<source>\S+)\] "(?P<msg>(?:[^"\\]|\\.)*)"'
)
_FIELD: Final = re.compile(r'(?P<key>[\w.]+)=(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>\S+))')

# The messages cert-manager logs around an HTTP-01 self-check (pkg/issuer/acme/http, v1.21.2).
MSG_ROUND: Final = "running self check multiple times to ensure challenge has propagated"
MSG_GET: Final = "performing HTTP01 reachability check"
MSG_GET_OK: Final = "reachability test succeeded"
MSG_GET_FAILED: Final = (
    "failed to perform self check GET request",
    "received HTTP status code was not StatusOK (200)",
    "key returned by server did not match expected",
    "failed to decode response body",
)
MSG_ROUND_OK: Final = "self check succeeded"
MSG_ROUTE_REVERT: Final = "HTTPRoute is out of date, updating"


@dataclass(frozen=True)
class LogLine:
    """One structured klog line; ``time`` is klog's ``HH:MM:SS.micro`` (local time of day)."""

    level: str
    time: str
    message: str
    fields: dict[str, str]

    @property
    def challenge(self) -> tuple[str, str] | None:
        """(namespace, name) of the Challenge the line is about, if it names one."""
        name, namespace = self.fields.get("resource_name"), self.fields.get("resource_namespace")
        if name is None or namespace is None or self.fields.get("resource_kind", "Challenge") != "Challenge":
            return None
        return namespace, name


def parse_log(text: str) -> Iterator[LogLine]:
    """The structured lines of a klog text log (others, e.g. panics, are skipped)."""
    for raw in text.splitlines():
        head = _KLOG_LINE.match(raw)
        if head is None:
            continue
        rest = raw[head.end() :]
        fields = {m["key"]: m["quoted"] if m["quoted"] is not None else m["bare"] for m in _FIELD.finditer(rest)}
        yield LogLine(head["level"], head["time"], head["msg"], fields)


def klog_epoch(clock: str, near: float) -> float:
    """Epoch seconds of a klog time of day, taking the day (yesterday, today, tomorrow) closest to ``near``."""
    local = dt.datetime.fromtimestamp(near)
    parsed = dt.datetime.strptime(clock, "%H:%M:%S.%f").time()
    candidates = (dt.datetime.combine(local.date() + dt.timedelta(days=d), parsed) for d in (-1, 0, 1))
    return min((c.timestamp() for c in candidates), key=lambda t: abs(t - near))


@dataclass
class Round:
    """One self-check round of one Challenge."""

    start: float  # epoch seconds
    reverted: bool  # cert-manager rewrote its route in the Present() right before this round
    gets_passed: int = 0
    failure: str | None = None  # the failed GET's message (and status code), None while passing
    passed: bool = False


@dataclass
class ChallengeRounds:
    """Every round of one Challenge, in order."""

    namespace: str
    name: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def failed(self) -> list[Round]:
        """Rounds that ended with a failed GET."""
        return [r for r in self.rounds if r.failure is not None]


def rounds(lines: Iterable[LogLine], near: float) -> dict[tuple[str, str], ChallengeRounds]:
    """(namespace, name) -> the Challenge's rounds, from cert-manager's log; times relative to ``near``
    (any epoch time within hours of the log, e.g. ``time.time()`` when it is read)."""
    found: dict[tuple[str, str], ChallengeRounds] = {}
    reverted: set[tuple[str, str]] = set()
    for line in lines:
        key = line.challenge
        if key is None:
            continue
        if line.message == MSG_ROUTE_REVERT:
            reverted.add(key)
            continue
        entry = found.setdefault(key, ChallengeRounds(*key))
        current = entry.rounds[-1] if entry.rounds else None
        if line.message == MSG_ROUND:
            entry.rounds.append(Round(klog_epoch(line.time, near), key in reverted))
            reverted.discard(key)
        elif current is None:
            continue
        elif line.message == MSG_GET_OK:
            current.gets_passed += 1
        elif line.message in MSG_GET_FAILED:
            code = line.fields.get("code")
            current.failure = f"{line.message} ({code})" if code else line.message
        elif line.message == MSG_ROUND_OK:
            current.passed = True
    return found


@dataclass(frozen=True)
class Classified:
    """A Challenge's rounds sorted by cause (see the module docstring)."""

    rounds: int
    immediate_failed: int  # cert-manager's own rounds right after Present: fail by design
    lost: int  # failed after the first retry wait: each cost a retry period
    lost_after_revert: int  # of those, right after cert-manager reverted its route (route mode patch)
    passed: bool

    def as_dict(self) -> dict[str, int | bool]:
        """For results files."""
        return {
            "rounds": self.rounds,
            "immediate_failed": self.immediate_failed,
            "lost": self.lost,
            "lost_after_revert": self.lost_after_revert,
            "passed": self.passed,
        }


def classify(challenge: ChallengeRounds, retry_period: float) -> Classified:
    """Failed rounds within half a retry period of the first round are immediate; later ones are lost."""
    if not challenge.rounds:
        return Classified(0, 0, 0, 0, False)
    first = challenge.rounds[0].start
    immediate = [r for r in challenge.failed if r.start - first < retry_period / 2]
    lost = [r for r in challenge.failed if r.start - first >= retry_period / 2]
    return Classified(
        rounds=len(challenge.rounds),
        immediate_failed=len(immediate),
        lost=len(lost),
        lost_after_revert=sum(r.reverted for r in lost),
        passed=any(r.passed for r in challenge.rounds),
    )


@dataclass(frozen=True)
class SelfChecks:
    """Totals over a set of lines: rounds, GETs and how GETs failed."""

    rounds: int
    rounds_passed: int
    gets: int
    gets_passed: int
    gets_failed: int
    failures: dict[str, int]  # failure message -> count
    route_reverts: int


def count_self_checks(lines: Iterable[LogLine], namespace: str | None = None) -> SelfChecks:
    """Count self-check rounds, GETs and route reverts, all or those of one namespace."""
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for line in lines:
        key = line.challenge
        if key is None or (namespace is not None and key[0] != namespace):
            continue
        if line.message in MSG_GET_FAILED:
            code = line.fields.get("code")
            failures[f"{line.message} ({code})" if code else line.message] += 1
        counts[line.message] += 1
    return SelfChecks(
        rounds=counts[MSG_ROUND],
        rounds_passed=counts[MSG_ROUND_OK],
        gets=counts[MSG_GET],
        gets_passed=counts[MSG_GET_OK],
        gets_failed=sum(failures.values()),
        failures=dict(failures),
        route_reverts=counts[MSG_ROUTE_REVERT],
    )
