"""The outcome of a Challenge, for the success/failure counters (the shell counts each Challenge once)."""

from __future__ import annotations

from typing import Literal

from reconciler.model import FINAL_FAILURE_STATES, FINAL_SUCCESS_STATES

Outcome = Literal["success", "failure"]


def outcome(state: str) -> Outcome | None:
    """cert-manager's final states: `valid` succeeded; `invalid`, `expired`, `errored` failed; others
    (``, `pending`, `processing`, `ready`) are still under way."""
    if state in FINAL_SUCCESS_STATES:
        return "success"
    if state in FINAL_FAILURE_STATES:
        return "failure"
    return None
