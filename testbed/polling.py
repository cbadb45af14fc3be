"""Waiting until something holds: the one deadline loop of the test bed, for blocking start-up code
(``wait_until``) and for async tests (``wait_for``).

Both say on timeout what they waited for and the last value or error seen, so a failure explains itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold in time."""


@dataclass
class _Deadline:
    what: str
    within: float
    started: float = field(default_factory=time.monotonic)
    last: object = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> None:
        if self.elapsed >= self.within:
            raise WaitTimeout(f"timed out after {self.within}s waiting for {self.what}; last: {self.last!r}")


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.1,
    give_up: Callable[[], None] | None = None,
) -> float:
    """Call ``check`` until it returns true; return the seconds that took.

    Start-up probes fail in many ways before a server is up (refused connections, 503s, half-written
    files), so any exception from ``check`` counts as "not yet". ``give_up`` runs before every try and
    may raise to stop at once, e.g. when the process being waited for has exited.
    """
    deadline = _Deadline(what, timeout)
    while True:
        if give_up is not None:
            give_up()
        try:
            if check():
                return deadline.elapsed
        except Exception as err:  # anything is "not ready yet" until the deadline
            deadline.last = err
        deadline.check()
        time.sleep(interval)


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = 10.0,
    interval: float = 0.1,
    what: str = "condition",
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Await ``probe`` until it returns something truthy and return that.

    Only exceptions in ``retry_on`` count as "not yet": in a test any other one is a finding.
    """
    deadline = _Deadline(what, within)
    while True:
        try:
            value = await probe()
            if value:
                return value
            deadline.last = value
        except retry_on as err:
            deadline.last = err
        deadline.check()
        await anyio.sleep(interval)
