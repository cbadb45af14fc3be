"""Which objects are cert-manager's real HTTP-01 solver objects.

Any tenant can put the solver labels on a Service or HTTPRoute, so the labels only say "claims to be a
solver". The claim is believed when the object's controller owner reference names a Challenge that the
cache holds, in the same namespace, and the object's checksum labels match that Challenge's dnsName and
token (cert-manager derives them with adler32; a copied owner reference on another object fails there).
"""

from __future__ import annotations

import zlib
from typing import TypeVar

from reconciler.model import CHALLENGE_GROUP, JSON, Challenge, HasMeta, Meta
from reconciler.policy import Policy
from reconciler.reconcile.intents import Decision, Kind, Refusal, Subject
from reconciler.reconcile.reasons import Refused, Skip
from reconciler.reconcile.snapshot import Snapshot
from reconciler.text import quoted

T = TypeVar("T", bound=HasMeta)


def owned_by_service(meta: Meta, service_name: str, policy: Policy) -> bool:
    """One of our derived objects (Backend, companion route): our managed-by label AND controlled by that
    Service. Anything else under the same name (the platform's, a tenant's) is never touched."""
    ref = meta.controller_ref()
    return (
        meta.labels.get(policy.managed_by_label) == policy.managed_by_value
        and ref is not None
        and ref.kind == "Service"
        and ref.group == ""
        and ref.name == service_name
    )


def service_owner_references(service: Meta) -> list[JSON]:
    """The owner references of an object we derive from a Service: controlled by it, so the garbage
    collector removes it with the Service even while this controller is down."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": service.name,
            "uid": service.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def subject(kind: Kind, meta: Meta) -> Subject:
    return Subject(kind, meta.namespace, meta.name, meta.uid)


def refusal(kind: Kind, meta: Meta, reason: Refused, message: str, also: tuple[Subject, ...] = ()) -> Refusal:
    """A Refusal about the object `meta` describes (and shown on the `also` objects too)."""
    return Refusal(kind, meta.namespace, meta.name, meta.uid, reason, message, also)


def checksum_label(value: str) -> str:
    """cert-manager's solver label value for a dnsName or token: adler32 as a decimal string."""
    return str(zlib.adler32(value.encode()))


def carries_solver_markers(meta: Meta, kind: Kind, policy: Policy) -> bool:
    """cert-manager's own selection: solver Services by the solver label, routes by the domain label."""
    if kind is Kind.SERVICE:
        return meta.labels.get(policy.solver_label) == "true"
    if kind is Kind.HTTPROUTE:
        return policy.domain_label in meta.labels
    return False


def solver_challenge(meta: Meta, snapshot: Snapshot, policy: Policy, kind: Kind) -> Challenge | Refusal | None:
    """The Challenge that owns this solver object; None when the object makes no solver claim at all (or
    its Challenge was just deleted); a Refusal when it claims to be a solver but the claim does not hold."""
    if not carries_solver_markers(meta, kind, policy):
        return None
    ref = meta.controller_ref()
    if ref is None or ref.kind != "Challenge" or ref.group != CHALLENGE_GROUP:
        found = "no controller" if ref is None else f"controller {quoted(ref.kind)} ({quoted(ref.api_version)})"
        return refusal(
            kind, meta, Refused.NO_CHALLENGE_OWNER, f"carries ACME solver labels but has {found}, not a Challenge"
        )
    challenge = snapshot.challenge_by_uid(ref.uid)
    if challenge is None and snapshot.challenge_was_deleted(ref.uid):
        return None  # a finished solver's leftover, about to be garbage-collected: nothing to do or report
    if challenge is None or challenge.meta.namespace != meta.namespace or challenge.meta.name != ref.name:
        return refusal(
            kind,
            meta,
            Refused.CHALLENGE_NOT_FOUND,
            f"no Challenge {quoted(ref.name)} with uid {quoted(ref.uid)} in namespace {meta.namespace}",
        )
    expected = {
        policy.domain_label: checksum_label(challenge.dns_name),
        policy.token_label: checksum_label(challenge.token),
    }
    wrong = sorted(k for k, v in expected.items() if meta.labels.get(k) != v)
    if wrong:
        return refusal(
            kind,
            meta,
            Refused.CHALLENGE_LABEL_MISMATCH,
            f"labels {', '.join(wrong)} do not match Challenge {challenge.meta.name}",
        )
    return challenge


def solver_object(obj: T | None, snapshot: Snapshot, policy: Policy, kind: Kind) -> tuple[T, Challenge] | Decision:
    """A solver object with the Challenge it acts for, or the Decision to return at once: the object is
    gone or being deleted, is no solver at all, or claims to be one without holding up (a refusal)."""
    if obj is None:
        return Decision()
    meta = obj.meta
    if meta.deletion_timestamp is not None:
        return Decision(skipped=Skip.BEING_DELETED)
    owner = solver_challenge(meta, snapshot, policy, kind)
    if owner is None:
        return Decision(skipped=Skip.NOT_A_SOLVER)
    if isinstance(owner, Refusal):
        return Decision(refusals=(owner,))
    return obj, owner
