"""Where the client configuration comes from, checked so that a bad one is one clear line, not a traceback.

kubernetes-asyncio loads the configuration (files, contexts, TLS, tokens, exec plugins), but reports a
missing file as "Expected key current-context in kube-config". We look first, in the order the
configuration is chosen (`--kubeconfig`, `$KUBECONFIG`, in-cluster, `~/.kube/config`), and name the file,
the context and what to do. Every problem here is ours to fix, not the cluster's: exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.kube import k8s
from reconciler.kube.diagnosis import ExitCode, StartupError

DEFAULT_KUBECONFIG = "~/.kube/config"
TOKEN_FILE = k8s.incluster_config.SERVICE_TOKEN_FILENAME
CA_FILE = k8s.incluster_config.SERVICE_CERT_FILENAME
HOST_ENV = k8s.incluster_config.SERVICE_HOST_ENV_NAME
PORT_ENV = k8s.incluster_config.SERVICE_PORT_ENV_NAME

FLAG = "--kubeconfig / RECONCILER_KUBECONFIG"
CONTEXT_FLAG = "--context / RECONCILER_CONTEXT"
CREDENTIALS = ("token", "tokenFile", "client-certificate", "client-certificate-data", "exec", "auth-provider")


def _problem(line: str) -> StartupError:
    return StartupError(ExitCode.SETTINGS, line)


@dataclass(frozen=True, slots=True)
class Source:
    """The configuration chosen: kubeconfig files (merged, in order) or the pod's in-cluster one."""

    paths: tuple[str, ...]
    origin: str
    """How it was chosen, for messages: the flag, `$KUBECONFIG`, `~/.kube/config` or `in-cluster`."""

    @property
    def in_cluster(self) -> bool:
        return not self.paths

    @property
    def name(self) -> str:
        return os.pathsep.join(self.paths) if self.paths else "in-cluster configuration"


def choose(kubeconfig: str | None, environ: Mapping[str, str], default: str = DEFAULT_KUBECONFIG) -> Source:
    """The configuration to load, as the README orders it; a file named explicitly must exist."""
    if kubeconfig:
        path = os.path.expanduser(kubeconfig)
        if not os.path.lexists(path):
            raise _problem(f"kubeconfig {kubeconfig} ({FLAG}) does not exist: pass the path of a kubeconfig file")
        return Source((path,), FLAG)
    if environ.get("KUBECONFIG"):
        listed = [p for p in environ["KUBECONFIG"].split(os.pathsep) if p]
        present = tuple(os.path.expanduser(p) for p in listed if os.path.lexists(os.path.expanduser(p)))
        if not present:
            raise _problem(
                f"no file named in $KUBECONFIG exists ({environ['KUBECONFIG']}): "
                f"point KUBECONFIG at a kubeconfig file, or pass {FLAG}"
            )
        return Source(present, "$KUBECONFIG")
    if HOST_ENV in environ:
        return Source((), "in-cluster")
    path = os.path.expanduser(default)
    if not os.path.lexists(path):
        raise _problem(
            f"no Kubernetes configuration: not in a cluster ({HOST_ENV} is unset), no {FLAG}, no $KUBECONFIG "
            f"and no {default}: pass --kubeconfig PATH (or RECONCILER_KUBECONFIG), or set KUBECONFIG"
        )
    return Source((path,), default)


def _read(path: str) -> dict[str, Any]:
    """One kubeconfig file as a mapping, or the line saying why it cannot be."""
    if os.path.isdir(path):
        raise _problem(f"kubeconfig {path} is a directory, not a file: pass the kubeconfig file inside it")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise _problem(
            f"kubeconfig {path} cannot be read ({exc.strerror or exc}): "
            "let the reconciler's user read it (owner, mode, or the Secret volume's defaultMode/fsGroup)"
        ) from None
    except UnicodeDecodeError:
        raise _problem(f"kubeconfig {path} is not text (YAML): pass a kubeconfig file") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise _problem(f"kubeconfig {path} is not valid YAML{where}: fix the file (kubectl config view)") from None
    if doc is None:
        raise _problem(f"kubeconfig {path} is empty: pass a kubeconfig with a cluster, a user and a context")
    if not isinstance(doc, dict):
        raise _problem(f"kubeconfig {path} is not a kubeconfig (a YAML mapping of clusters, users and contexts)")
    return doc


def _named(items: Any) -> dict[str, dict[str, Any]]:
    """`[{name, <kind>: {...}}]` (the merger wraps items in ConfigNodes) -> {name: item}; first wins."""
    found: dict[str, dict[str, Any]] = {}
    for item in items if isinstance(items, list) else ():
        value = getattr(item, "value", item)
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            found.setdefault(value["name"], value)
    return found


def _listing(names: Mapping[str, Any]) -> str:
    return ", ".join(sorted(names)) or "none"


def check(source: Source, context: str | None) -> Any:
    """The merged kubeconfig (the loader's `ConfigNode`: it remembers each file, for relative paths), once
    it names a context whose cluster and credentials are defined."""
    for path in source.paths:
        _read(path)
    merged = k8s.kube_config.KubeConfigMerger(os.pathsep.join(source.paths)).config
    config: dict[str, Any] = merged.value if merged is not None else {}
    where = f"kubeconfig {source.name}"
    contexts = _named(config.get("contexts"))
    name = context or config.get("current-context")
    if not name:
        if not contexts:
            raise _problem(f"{where} defines no contexts: add one (kubectl config set-context) and select it")
        raise _problem(
            f"{where} has no current-context and no {CONTEXT_FLAG} is set (contexts: {_listing(contexts)}): "
            "pass --context NAME, or run kubectl config use-context NAME"
        )
    if name not in contexts:
        if context:
            raise _problem(
                f"context {name!r} ({CONTEXT_FLAG}) is not in {where} (contexts: {_listing(contexts)}): "
                "pass one of those"
            )
        raise _problem(
            f"current-context {name!r} of {where} is not one of its contexts ({_listing(contexts)}): "
            "run kubectl config use-context NAME, or pass --context NAME"
        )
    ctx = contexts[name].get("context") or {}
    clusters = _named(config.get("clusters"))
    cluster_name = ctx.get("cluster")
    if cluster_name not in clusters:
        raise _problem(
            f"context {name!r} in {where} refers to cluster {cluster_name!r}, which is not defined "
            f"(clusters: {_listing(clusters)}): fix the kubeconfig"
        )
    if not (clusters[cluster_name].get("cluster") or {}).get("server"):
        raise _problem(f"cluster {cluster_name!r} in {where} has no server address: set clusters[].cluster.server")
    users = _named(config.get("users"))
    user_name = ctx.get("user")
    if not user_name:
        raise _problem(
            f"context {name!r} in {where} names no user, so it has no credentials: "
            "add a user with a token, client certificate or exec plugin to the context"
        )
    if user_name not in users:
        raise _problem(
            f"context {name!r} in {where} refers to user {user_name!r}, which is not defined "
            f"(users: {_listing(users)}): fix the kubeconfig"
        )
    user = users[user_name].get("user") or {}
    if not any(user.get(k) for k in CREDENTIALS) and not (user.get("username") and user.get("password")):
        raise _problem(
            f"user {user_name!r} of context {name!r} in {where} has no credentials (token, tokenFile, "
            "client-certificate, exec, auth-provider or username/password): add them to the kubeconfig"
        )
    return merged


def _check_in_cluster(environ: Mapping[str, str], token_file: str, ca_file: str, context: str | None) -> None:
    if context:
        raise _problem(
            f"{CONTEXT_FLAG} is set but no kubeconfig is (in-cluster configuration has no contexts): "
            f"pass {FLAG} too, or unset the context"
        )
    for env in (HOST_ENV, PORT_ENV):
        if not environ.get(env):
            raise _problem(f"in-cluster configuration is incomplete: ${env} is unset or empty: pass {FLAG}")
    for path, what in ((token_file, "ServiceAccount token"), (ca_file, "cluster CA certificate")):
        if not os.path.isfile(path):
            raise _problem(
                f"in-cluster configuration is incomplete: the {what} {path} does not exist: mount the "
                f"ServiceAccount token (automountServiceAccountToken must not be false), or pass {FLAG}"
            )


async def load(
    kubeconfig: str | None,
    context: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    default: str = DEFAULT_KUBECONFIG,
    token_file: str = TOKEN_FILE,
    ca_file: str = CA_FILE,
) -> tuple[k8s.Configuration, Source]:
    """The client configuration and where it came from; `StartupError` (exit 2) saying what to fix."""
    env = os.environ if environ is None else environ
    source = choose(kubeconfig, env, default)
    configuration = k8s.Configuration()
    try:
        if source.in_cluster:
            _check_in_cluster(env, token_file, ca_file, context)
            in_cluster = k8s.incluster_config.InClusterConfigLoader(token_file, ca_file, environ=dict(env))
            in_cluster.load_and_set(configuration)
        else:
            merged = check(source, context)
            loader = k8s.kube_config.KubeConfigLoader(config_dict=merged, config_base_path=None, active_context=context)
            await loader.load_and_set(configuration)
    except StartupError:
        raise
    except Exception as exc:  # whatever the loader trips on (a certificate file, an exec plugin): still one line
        what = f"context {context!r} in " if context else ""
        raise _problem(
            f"cannot load the client configuration from {what}{source.name}: {exc}: fix the kubeconfig"
        ) from None
    return configuration, source
