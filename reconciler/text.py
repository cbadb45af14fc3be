"""Bounds on text that came from tenants, before it reaches a log line, an Event or a metric label.

Any annotation, name or message a tenant controls can be up to ~256 kB; copying it whole into every log
line and Event lets one tenant flood the operators' logs and the API server. Every such string passes
through `clip` on its way out.
"""

from __future__ import annotations

LOG_VALUE_MAX = 512
"""Characters of one log field (the message, or one key=value)."""
EVENT_MESSAGE_MAX = 1024
"""Characters of a Kubernetes Event message (the API server's own limit is 1 KiB for events.k8s.io)."""
QUOTED_MAX = 128
"""Characters of a tenant value quoted inside a sentence (a refusal's message)."""
LABEL_VALUE_MAX = 128
"""Characters of a metric label value that is not from a closed set (a project name)."""


def clip(value: object, limit: int) -> str:
    """`value` as text, at most `limit` characters; a cut is marked with how much was left out."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    marker = f"...[{len(text) - limit} more]"
    keep = max(0, limit - len(marker))
    return text[:keep] + marker[: limit - keep]


def quoted(value: object) -> str:
    """A tenant value for a sentence: repr-quoted and clipped."""
    return clip(repr(value), QUOTED_MAX)
