"""Challenge outcomes for the success/failure counters: cert-manager's final states, nothing else."""

from __future__ import annotations

import pytest

from reconciler.model import Challenge
from reconciler.reconcile.challenges import outcome
from tests.unit import objects as o


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("valid", "success"),
        ("invalid", "failure"),
        ("expired", "failure"),
        ("errored", "failure"),
        ("", None),
        ("pending", None),
        ("processing", None),
        ("ready", None),
        ("Valid", None),
    ],
)
def test_outcome(state: str, expected: str | None) -> None:
    assert outcome(state) == expected


@pytest.mark.parametrize("state", ["valid", "invalid", "pending"])
def test_outcome_agrees_with_the_view(state: str) -> None:
    ch = Challenge.from_raw(o.challenge(state=state))
    assert ch.state == state
    assert (outcome(ch.state) is not None) == ch.final


def test_missing_status_is_under_way() -> None:
    raw = o.challenge()
    del raw["status"]
    assert outcome(Challenge.from_raw(raw).state) is None
