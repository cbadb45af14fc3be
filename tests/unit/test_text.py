"""Tenant text is bounded on its way into logs, Events and metric labels (`reconciler/text.py`, `log.py`)."""

from __future__ import annotations

import json
import logging

import pytest

from reconciler.log import JsonFormatter, TextFormatter
from reconciler.text import LOG_VALUE_MAX, clip, quoted


@pytest.mark.parametrize("limit", [0, 1, 10, 20, 512])
def test_clip_never_exceeds_its_limit_and_says_what_it_cut(limit: int) -> None:
    text = "x" * 200_000
    out = clip(text, limit)
    assert len(out) <= limit
    if limit >= 20:
        assert out.endswith("more]")


def test_short_text_is_kept_as_it_is() -> None:
    assert clip("default-gw", 128) == "default-gw"
    assert quoted("8o89") == "'8o89'"


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_a_200_kb_value_gives_a_bounded_log_line(formatter: logging.Formatter) -> None:
    huge = "a" * 200_000
    record = logging.LogRecord("reconciler", logging.WARNING, __file__, 1, "refused %s", (huge,), None)
    record.detail = f"annotation route-port={huge!r}"
    record.count = 3
    line = formatter.format(record)
    assert len(line) < 4 * LOG_VALUE_MAX
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["count"] == 3, "numbers stay numbers"
