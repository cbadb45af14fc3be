"""The whole API answer -> outcome table for the reconciler's writes: pure, and tested on its own."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from reconciler.kube.client import ApiError
from reconciler.reconcile.intents import Create, Delete, Patch, Write


class Requeue(Exception):
    """The decision could not be fully applied and must be retried with backoff."""

    def __init__(self, at_least: float = 0.0) -> None:
        super().__init__()
        self.at_least = at_least
        """Seconds the retry waits at least, whatever the queue's per-key backoff says."""


FORBIDDEN_RETRY_SECONDS = 1.0
"""A 403 from RBAC is about the reconciler's identity (an authorizer still syncing after a restart, a role
being rolled out), not one object: every write would meet it, so none is retried sooner than this."""


class Verb(StrEnum):
    PATCH = "patch"
    CREATE = "create"
    DELETE = "delete"

    @property
    def past(self) -> str:
        return {"patch": "patched", "create": "created", "delete": "deleted"}[self.value]


VERBS: dict[type[Write], Verb] = {Patch: Verb.PATCH, Create: Verb.CREATE, Delete: Verb.DELETE}


class Outcome(StrEnum):
    """The `result` label of `acme_gateway_writes_total`."""

    SUCCESS = "success"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    NAMESPACE_TERMINATING = "namespace_terminating"
    FORBIDDEN = "forbidden"
    """RBAC denied the reconciler: retried with back-off (an API server that is starting answers so until
    its authorizer has synced), an ERROR for the operator, nothing for the tenant."""
    REJECTED = "rejected"
    ERROR = "error"
    NOT_SENT = "not_sent"
    """The very same write was rejected moments ago: not sent again (see `Writer.apply`)."""
    OWNER_GONE = "owner_gone"
    """A create of an object that was just deleted, whose owner the API server says is gone too: the
    garbage collector removed it before the owner's own deletion reached our cache. Not re-created."""
    DRY_RUN = "dry_run"
    """`--dry-run`: decided and logged, not sent; the writes after it in the decision are decided too."""


@dataclass(frozen=True, slots=True)
class Handling:
    outcome: Outcome
    message: str
    """The log line (`{verb}`/`{past}`/`{kind}` filled in)."""
    level: int = logging.INFO
    requeue: bool = False
    """Retrying later can succeed: back to the queue with backoff."""
    retry_at_least: float = 0.0
    """The shortest wait before that retry (seconds)."""
    report: bool = False
    """Our request is wrong for this object: a `WriteRejected` Warning Event where the tenant sees it."""


def handling(verb: Verb, error: ApiError | None) -> Handling:
    """What an API answer to a write means (None: success)."""
    if error is None:
        return Handling(Outcome.SUCCESS, "{past} {kind}")
    if error.conflict and verb is Verb.CREATE and error.reason == "AlreadyExists":
        # Either ours and the watch has not shown it yet (its event will re-trigger us), or someone
        # else's object of that name, which we must not touch: no retry loop either way.
        return Handling(Outcome.ALREADY_EXISTS, "{verb} found the name taken")
    if error.conflict:
        return Handling(Outcome.CONFLICT, "{verb} conflicted; will retry on fresh state", requeue=True)
    if error.not_found and verb is Verb.PATCH:
        return Handling(Outcome.NOT_FOUND, "{verb} target is gone")
    if error.not_found and verb is Verb.DELETE:
        return Handling(Outcome.NOT_FOUND, "{verb} target was already gone")  # what we wanted, not our doing
    if error.namespace_terminating:
        # Everything in it is going away; nothing to fix and nobody to tell.
        return Handling(Outcome.NAMESPACE_TERMINATING, "{verb} skipped: namespace is being deleted")
    if error.forbidden_identity:
        return Handling(
            Outcome.FORBIDDEN,
            "{verb} forbidden to the reconciler (RBAC); will retry",
            logging.ERROR,
            requeue=True,
            retry_at_least=FORBIDDEN_RETRY_SECONDS,
        )
    if error.transient:
        return Handling(Outcome.ERROR, "{verb} failed", logging.WARNING, requeue=True)
    # 4xx: retrying unchanged cannot help; the next watch event or resync tries again.
    return Handling(Outcome.REJECTED, "{verb} rejected by the API server", logging.ERROR, report=True)
