"""A dictionary standing in for the API server, to apply the reconcilers' writes and check idempotence.

It keeps the server's rules that matter for conditional writes: merge patches (RFC 7386) are refused with
409 when `metadata.resourceVersion` in the body is stale, deletes check the uid and resourceVersion
preconditions, creates of an existing name conflict, and only a real change bumps the resourceVersion.
It also checks the few schema rules our writes could break (Backend endpoints, Service backendRef ports).
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.model import JSON
from reconciler.reconcile.intents import Create, Delete, Patch, Write

ObjKey = tuple[str, str, str]  # (kind, namespace, name)


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes a key, anything else (lists too) replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: JSON = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def validate(obj: Mapping[str, Any]) -> None:
    """The CRD rules a reconciler write could violate (a 422 from the real server)."""
    if obj["kind"] == "Backend":
        endpoints = obj.get("spec", {}).get("endpoints") or []
        if not 1 <= len(endpoints) <= 256:
            raise ApiError(422, "Backend needs 1..256 endpoints")
        for ep in endpoints:
            ip = ep.get("ip") or {}
            if set(ep) != {"ip"} or set(ip) != {"address", "port"}:
                raise ApiError(422, f"unexpected endpoint {ep}")
            ipaddress.ip_address(ip["address"])
            if not (isinstance(ip["port"], int) and 0 <= ip["port"] <= 65535):
                raise ApiError(422, f"bad port {ip['port']}")
    if obj["kind"] == "HTTPRoute":
        for rule in obj.get("spec", {}).get("rules") or []:
            refs = rule.get("backendRefs") or []
            if len(refs) > 16:
                raise ApiError(422, "at most 16 backendRefs")
            for ref in refs:
                if not ref.get("name"):
                    raise ApiError(422, "backendRef needs a name")
                if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service" and "port" not in ref:
                    raise ApiError(422, "Must have port for Service reference")
                port = ref.get("port")
                if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
                    raise ApiError(422, f"bad backendRef port {port}")


class FakeAPI:
    def __init__(self, objects: Iterable[Mapping[str, Any]] = ()) -> None:
        self.objects: dict[ObjKey, JSON] = {}
        self._rv = itertools.count(1000)
        self._uid = itertools.count(1)
        for obj in objects:
            self.objects[self.key_of(obj)] = copy.deepcopy(dict(obj))

    @staticmethod
    def key_of(obj: Mapping[str, Any]) -> ObjKey:
        md = obj["metadata"]
        return (obj["kind"], md.get("namespace", ""), md["name"])

    def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        return self.objects.get((kind, namespace, name))

    def update(self, obj: Mapping[str, Any]) -> None:
        """Another actor's unconditional update (e.g. a status write): a new resourceVersion."""
        stored = copy.deepcopy(dict(obj))
        stored["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[self.key_of(stored)] = stored

    def apply(self, write: Write) -> None:
        if isinstance(write, Patch):
            self._patch(write)
        elif isinstance(write, Create):
            self._create(write)
        else:
            self._delete(write)

    def apply_all(self, writes: Iterable[Write]) -> None:
        for write in writes:
            self.apply(write)

    def _patch(self, write: Patch) -> None:
        key = (write.kind.value, write.namespace, write.name)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, f"{key} not found")
        body_rv = write.body.get("metadata", {}).get("resourceVersion")
        if body_rv != write.resource_version:
            raise ApiError(400, "patch body and intent disagree on resourceVersion")
        if body_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, f"{key}: resourceVersion {body_rv} is stale")
        updated = merge_patch(current, write.body)
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if updated == current:
            return
        validate(updated)
        updated["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = updated

    def _create(self, write: Create) -> None:
        body = copy.deepcopy(write.body)
        md = body["metadata"]
        if md.get("namespace", "") != write.namespace or body.get("kind") != write.kind.value:
            raise ApiError(400, "body does not match the intent")
        if "resourceVersion" in md or "uid" in md:
            raise ApiError(400, "resourceVersion and uid are set by the server")
        key = (write.kind.value, write.namespace, write.name)
        if key in self.objects:
            raise ApiError(409, f"{key} already exists")
        validate(body)
        md["uid"] = f"uid-created-{next(self._uid)}"
        md["resourceVersion"] = str(next(self._rv))
        md["creationTimestamp"] = "2026-08-01T10:00:01Z"
        self.objects[key] = body

    def _delete(self, write: Delete) -> None:
        key = (write.kind.value, write.namespace, write.name)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, f"{key} not found")
        md = current["metadata"]
        if md["uid"] != write.uid or md["resourceVersion"] != write.resource_version:
            raise ApiError(409, f"{key}: delete preconditions failed")
        del self.objects[key]
