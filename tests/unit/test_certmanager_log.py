"""Reading the real cert-manager's log (``testbed.certmanager_log``): rounds, GETs, reverts, lost rounds.

The full-stack suite and the storm benchmark count lost self-checks from these; a parsing slip would
turn into a wrong claim about the reconciler, so the rules are pinned here on log lines of the shape
cert-manager v1.21.2 writes at ``--v=4``.
"""

from __future__ import annotations

import datetime as dt

from testbed.certmanager_log import (
    MSG_GET,
    MSG_GET_OK,
    MSG_ROUND,
    MSG_ROUND_OK,
    MSG_ROUTE_REVERT,
    classify,
    count_self_checks,
    klog_epoch,
    parse_log,
    rounds,
)

NS, CH = "org-a-p1", "app-1-123-456"
NEAR = dt.datetime(2026, 12, 2, 6, 0, 0).timestamp()


def line(clock: str, message: str, name: str = CH, **fields: str) -> str:
    extra = " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}" for k, v in fields.items())
    return (
        f'I1202 {clock}    8686 http.go:171] "{message}" logger="cert-manager.http01.selfCheck" '
        f'resource_name="{name}" resource_namespace="{NS}" resource_kind="Challenge" {extra}'
    ).rstrip()


def failed(clock: str, code: str) -> str:
    return line(clock, "received HTTP status code was not StatusOK (200)", code=code)


LOG = "\n".join(
    [
        "some unstructured panic output",
        line("06:00:01.000000", MSG_ROUND),
        line("06:00:01.001000", MSG_GET),
        failed("06:00:01.002000", "404"),
        line("06:00:01.030000", MSG_ROUND),
        failed("06:00:01.031000", "503"),
        line("06:00:11.000000", MSG_ROUTE_REVERT),
        line("06:00:11.010000", MSG_ROUND),
        failed("06:00:11.020000", "503"),
        line("06:00:21.000000", MSG_ROUND),
        *[line(f"06:00:{21 + 2 * i}.100000", MSG_GET_OK) for i in range(5)],
        line("06:00:29.200000", MSG_ROUND_OK),
        line("06:00:02.000000", MSG_ROUND, name="other-challenge"),
    ]
)


def test_structured_lines_and_their_fields() -> None:
    parsed = list(parse_log(LOG))
    assert len(parsed) == 16, "the unstructured line is skipped"
    assert parsed[0].message == MSG_ROUND
    assert parsed[0].challenge == (NS, CH)
    assert parsed[2].fields["code"] == "404"


def test_klog_time_of_day_becomes_epoch_seconds_on_the_nearest_day() -> None:
    assert klog_epoch("06:00:01.500000", NEAR) == NEAR + 1.5
    just_before_midnight = dt.datetime(2026, 12, 2, 23, 59, 59).timestamp()
    assert klog_epoch("00:00:01.000000", just_before_midnight) == just_before_midnight + 2


def test_rounds_per_challenge_with_their_outcome_and_the_revert_before_them() -> None:
    found = rounds(parse_log(LOG), NEAR)
    assert set(found) == {(NS, CH), (NS, "other-challenge")}
    mine = found[(NS, CH)].rounds
    assert [round(r.start - NEAR, 3) for r in mine] == [1.0, 1.03, 11.01, 21.0]
    assert [r.failure for r in mine] == [
        "received HTTP status code was not StatusOK (200) (404)",
        "received HTTP status code was not StatusOK (200) (503)",
        "received HTTP status code was not StatusOK (200) (503)",
        None,
    ]
    assert [r.reverted for r in mine] == [False, False, True, False]
    assert mine[-1].passed
    assert mine[-1].gets_passed == 5


def test_only_failed_rounds_after_the_first_retry_wait_are_lost() -> None:
    result = classify(rounds(parse_log(LOG), NEAR)[(NS, CH)], retry_period=10.0)
    assert result.rounds == 4
    assert result.immediate_failed == 2, "the two rounds right after Present fail by design"
    assert result.lost == 1
    assert result.lost_after_revert == 1
    assert result.passed


def test_totals_by_namespace() -> None:
    checks = count_self_checks(parse_log(LOG), NS)
    assert checks.rounds == 5
    assert checks.rounds_passed == 1
    assert checks.gets_passed == 5
    assert checks.gets_failed == 3
    assert checks.route_reverts == 1
    assert count_self_checks(parse_log(LOG), "elsewhere").rounds == 0
