#!/usr/bin/env python3
"""Print the `spec` of a PrometheusRule object as a plain Prometheus rule file (what promtool and a Prometheus
without the operator read), so manifests/monitoring/prometheusrule.yaml stays the one source of the rules.

    hack/prometheusrule-to-rules.py manifests/monitoring/prometheusrule.yaml > rules.yaml
"""

from __future__ import annotations

import sys

import yaml


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the rule expressions) as literal blocks, as they are written in the manifest."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def main(path: str) -> None:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    [rule] = [d for d in docs if d.get("kind") == "PrometheusRule"]
    yaml.dump(rule["spec"], sys.stdout, Dumper=_Dumper, sort_keys=False, width=1000)


if __name__ == "__main__":
    main(*sys.argv[1:])
