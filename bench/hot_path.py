"""Hot-path cost per watch event: decode, project into a view, reconcile; against the client's models.

Writes bench/results/hot_path.json. Not a test: run it by hand from the repository root: `python -m bench.hot_path`.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient

from reconciler.cache import ClusterCache
from reconciler.model import Challenge, Project, Service
from reconciler.policy import Policy
from reconciler.reconcile.backends import reconcile_backend
from reconciler.reconcile.services import reconcile_service

RESULTS = Path(__file__).resolve().parent / "results" / "hot_path.json"


def solver_service(i: int) -> dict[str, Any]:
    labels = {
        "acme.cert-manager.io/http-domain": str(zlib.adler32(f"d{i}.example.test".encode())),
        "acme.cert-manager.io/http-token": str(zlib.adler32(f"t{i}".encode())),
        "acme.cert-manager.io/http01-solver": "true",
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"cm-acme-http-solver-{i:05d}",
            "namespace": "org-demo",
            "uid": f"svc-{i}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-11-21T10:00:00Z",
            "labels": labels,
            "annotations": {
                "auth.istio.io/8089": "NONE",
                "kubectl.kubernetes.io/last-applied-configuration": "x" * 800,
            },
            "ownerReferences": [
                {
                    "apiVersion": "acme.cert-manager.io/v1",
                    "kind": "Challenge",
                    "name": f"ch-{i}",
                    "uid": f"ch-{i}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "cert-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:ports": {}}},
                }
            ]
            * 3,
        },
        "spec": {
            "type": "NodePort",
            "selector": labels,
            "clusterIP": "127.96.0.10",
            "clusterIPs": ["127.96.0.10"],
            "ports": [{"name": "http", "port": 8089, "targetPort": 8089, "protocol": "TCP", "nodePort": 30000 + i}],
            "sessionAffinity": "None",
            "externalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
        },
        "status": {"loadBalancer": {}},
    }


def per_call(fn: Callable[[], object], n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def main() -> None:
    n = 2000
    raw = solver_service(1)
    line = json.dumps({"type": "MODIFIED", "object": raw}).encode()
    keep = Policy().annotation_keys()
    api = ApiClient()

    class Resp:
        """What the client's own Watch hands `deserialize` per event: not a RESTResponse but any object whose
        `data` is the event's object re-encoded as a JSON str (kubernetes_asyncio/watch/watch.py). The stub
        types the parameter as RESTResponse (bytes `data`); `deserialize` reads `.data` and nothing else."""

        data = json.dumps(raw)

    cache = ClusterCache()
    policy = Policy()
    cache.projects.upsert(
        Project.from_raw(
            {
                "metadata": {"name": "demo", "namespace": "org", "uid": "p"},
                "spec": {"egressNetworkType": "cloud"},
                "status": {"namespace": "org-demo"},
            }
        )
    )
    for i in range(1000):
        cache.services.upsert(Service.from_raw(solver_service(i), keep))
        cache.challenges.upsert(
            Challenge.from_raw(
                {
                    "metadata": {"name": f"ch-{i}", "namespace": "org-demo", "uid": f"ch-{i}"},
                    "spec": {"dnsName": f"d{i}.example.test", "token": f"t{i}", "type": "HTTP-01"},
                },
                keep,
            )
        )
    key = ("org-demo", "cm-acme-http-solver-00001")
    results = {
        "json_loads_watch_line_us": per_call(lambda: json.loads(line), n),
        "view_from_raw_us": per_call(lambda: Service.from_raw(raw, keep), n),
        "watch_line_to_view_us": per_call(lambda: Service.from_raw(json.loads(line)["object"], keep), n),
        "kubernetes_asyncio_V1Service_us": per_call(lambda: api.deserialize(Resp(), "V1Service"), n // 4),  # type: ignore[arg-type]
        "reconcile_service_us": per_call(lambda: reconcile_service(key, cache, policy), n),
        "reconcile_backend_us": per_call(lambda: reconcile_backend(key, cache, policy), n),
    }
    results["model_vs_view_ratio"] = results["kubernetes_asyncio_V1Service_us"] / results["watch_line_to_view_us"]
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cached_services": 1000,
        "results": {k: round(v, 2) for k, v in results.items()},
    }
    await api.close()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
