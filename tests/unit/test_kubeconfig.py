"""Every way the client configuration can be unusable gives one line naming the file, the context and the
fix, and exit code 2 (our configuration, not the cluster's fault); a usable one loads."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.kube import kubeconfig
from reconciler.kube.diagnosis import ExitCode, StartupError

pytestmark = pytest.mark.anyio

SERVER = "https://127.0.0.1:6443"


def config(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": SERVER}}],
        "users": [{"name": "u", "user": {"token": "secret"}}],
        "contexts": [
            {"name": "a", "context": {"cluster": "c", "user": "u"}},
            {"name": "b", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "a",
    }
    doc.update(overrides)
    return doc


def write(tmp_path: Path, doc: Any, name: str = "kubeconfig") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(path)


async def problem(
    kubeconfig_path: str | None,
    context: str | None = None,
    environ: dict[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """The one line `load` fails with (exit code 2)."""
    with pytest.raises(StartupError) as caught:
        await kubeconfig.load(kubeconfig_path, context, environ or {}, **kwargs)
    assert caught.value.exit_code is ExitCode.SETTINGS
    [line] = caught.value.lines
    assert "\n" not in line
    return line


async def test_a_usable_kubeconfig_loads_its_current_context(tmp_path: Path) -> None:
    path = write(tmp_path, config())
    configuration, source = await kubeconfig.load(path, None, {})
    assert configuration.host == SERVER
    assert configuration.api_key["BearerToken"] == "Bearer secret"
    assert source.origin == kubeconfig.FLAG


async def test_a_missing_kubeconfig_file_is_named_not_current_context(tmp_path: Path) -> None:
    line = await problem(str(tmp_path / "nope"))
    assert line == (
        f"kubeconfig {tmp_path / 'nope'} (--kubeconfig / RECONCILER_KUBECONFIG) does not exist: "
        "pass the path of a kubeconfig file"
    )
    assert "current-context" not in line


async def test_kubeconfig_env_with_no_existing_file(tmp_path: Path) -> None:
    listed = f"{tmp_path / 'x'}:{tmp_path / 'y'}"
    line = await problem(None, environ={"KUBECONFIG": listed})
    assert line.startswith(f"no file named in $KUBECONFIG exists ({listed}): point KUBECONFIG at a kubeconfig")


async def test_kubeconfig_env_skips_missing_files_like_kubectl(tmp_path: Path) -> None:
    path = write(tmp_path, config())
    configuration, source = await kubeconfig.load(None, None, {"KUBECONFIG": f"{tmp_path / 'missing'}:{path}"})
    assert configuration.host == SERVER
    assert source.paths == (path,)


async def test_no_configuration_at_all_outside_a_cluster(tmp_path: Path) -> None:
    line = await problem(None, default=str(tmp_path / "home-config"))
    assert line.startswith("no Kubernetes configuration: not in a cluster (KUBERNETES_SERVICE_HOST is unset)")
    assert line.endswith("pass --kubeconfig PATH (or RECONCILER_KUBECONFIG), or set KUBECONFIG")


async def test_the_default_file_is_used_outside_a_cluster(tmp_path: Path) -> None:
    path = write(tmp_path, config())
    configuration, source = await kubeconfig.load(None, None, {}, default=path)
    assert configuration.host == SERVER
    assert source.origin == path


async def test_a_directory(tmp_path: Path) -> None:
    line = await problem(str(tmp_path))
    assert line == f"kubeconfig {tmp_path} is a directory, not a file: pass the kubeconfig file inside it"


async def test_a_dangling_symlink_cannot_be_read(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    line = await problem(str(link))
    assert line.startswith(f"kubeconfig {link} cannot be read (No such file or directory): let the reconciler")


async def test_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, config())

    def denied(*_: Any, **__: Any) -> Any:  # root reads anything: simulate what mode 0600 does to others
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(kubeconfig, "open", denied, raising=False)
    line = await problem(path)
    assert line == (
        f"kubeconfig {path} cannot be read (Permission denied): let the reconciler's user read it "
        "(owner, mode, or the Secret volume's defaultMode/fsGroup)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: [\n", "is not valid YAML at line 2: fix the file (kubectl config view)"),
        ("", "is empty: pass a kubeconfig with a cluster, a user and a context"),
        ("- a\n- b\n", "is not a kubeconfig (a YAML mapping of clusters, users and contexts)"),
    ],
)
async def test_not_a_kubeconfig(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert await problem(path) == f"kubeconfig {path} {expected}"


async def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert await problem(str(path)) == f"kubeconfig {path} is not text (YAML): pass a kubeconfig file"


async def test_no_current_context_lists_the_contexts(tmp_path: Path) -> None:
    path = write(tmp_path, config(**{"current-context": ""}))
    assert await problem(path) == (
        f"kubeconfig {path} has no current-context and no --context / RECONCILER_CONTEXT is set "
        "(contexts: a, b): pass --context NAME, or run kubectl config use-context NAME"
    )


async def test_no_contexts_at_all(tmp_path: Path) -> None:
    doc = config(contexts=[])
    del doc["current-context"]
    path = write(tmp_path, doc)
    assert await problem(path) == (
        f"kubeconfig {path} defines no contexts: add one (kubectl config set-context) and select it"
    )


async def test_an_unknown_context_flag(tmp_path: Path) -> None:
    path = write(tmp_path, config())
    assert await problem(path, context="prod") == (
        f"context 'prod' (--context / RECONCILER_CONTEXT) is not in kubeconfig {path} (contexts: a, b): "
        "pass one of those"
    )


async def test_the_context_flag_selects_another_context(tmp_path: Path) -> None:
    doc = config()
    doc["clusters"].append({"name": "other", "cluster": {"server": "https://127.0.0.2:6443"}})
    doc["contexts"][1]["context"]["cluster"] = "other"
    configuration, _ = await kubeconfig.load(write(tmp_path, doc), "b", {})
    assert configuration.host == "https://127.0.0.2:6443"


async def test_a_current_context_that_is_not_defined(tmp_path: Path) -> None:
    path = write(tmp_path, config(**{"current-context": "gone"}))
    assert await problem(path) == (
        f"current-context 'gone' of kubeconfig {path} is not one of its contexts (a, b): "
        "run kubectl config use-context NAME, or pass --context NAME"
    )


async def test_a_context_whose_cluster_is_not_defined(tmp_path: Path) -> None:
    doc = config()
    doc["contexts"][0]["context"]["cluster"] = "nowhere"
    path = write(tmp_path, doc)
    assert await problem(path) == (
        f"context 'a' in kubeconfig {path} refers to cluster 'nowhere', which is not defined (clusters: c): "
        "fix the kubeconfig"
    )


async def test_a_cluster_without_server(tmp_path: Path) -> None:
    path = write(tmp_path, config(clusters=[{"name": "c", "cluster": {}}]))
    assert await problem(path) == (
        f"cluster 'c' in kubeconfig {path} has no server address: set clusters[].cluster.server"
    )


async def test_a_context_without_user_has_no_credentials(tmp_path: Path) -> None:
    doc = config()
    del doc["contexts"][0]["context"]["user"]
    path = write(tmp_path, doc)
    assert await problem(path) == (
        f"context 'a' in kubeconfig {path} names no user, so it has no credentials: "
        "add a user with a token, client certificate or exec plugin to the context"
    )


async def test_a_context_whose_user_is_not_defined(tmp_path: Path) -> None:
    path = write(tmp_path, config(users=[]))
    assert await problem(path) == (
        f"context 'a' in kubeconfig {path} refers to user 'u', which is not defined (users: none): fix the kubeconfig"
    )


async def test_a_user_without_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, config(users=[{"name": "u", "user": {"username": "only-a-name"}}]))
    assert await problem(path) == (
        f"user 'u' of context 'a' in kubeconfig {path} has no credentials (token, tokenFile, client-certificate, "
        "exec, auth-provider or username/password): add them to the kubeconfig"
    )


async def test_whatever_the_loader_trips_on_is_still_one_line(tmp_path: Path) -> None:
    cert = tmp_path / "client.crt"
    path = write(tmp_path, config(users=[{"name": "u", "user": {"client-certificate": str(cert)}}]))
    line = await problem(path)
    assert line.startswith(f"cannot load the client configuration from {path}: ")
    assert str(cert) in line
    assert line.endswith(": fix the kubeconfig")


async def test_relative_certificate_paths_resolve_next_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not checked until the first connection")
    doc = config(clusters=[{"name": "c", "cluster": {"server": SERVER, "certificate-authority": "ca.crt"}}])
    configuration, _ = await kubeconfig.load(write(tmp_path, doc), None, {})
    assert configuration.ssl_ca_cert == str(tmp_path / "ca.crt")


# --- in-cluster ----------------------------------------------------------------------------------------


def pod_files(tmp_path: Path, without: str | None = None) -> dict[str, str]:
    """The mounted ServiceAccount files (`without` one of them: `token_file` or `ca_file`)."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("pod-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    files = {"token_file": str(token), "ca_file": str(ca)}
    if without:
        os.unlink(files[without])
    return files


IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


async def test_in_cluster_configuration_loads(tmp_path: Path) -> None:
    configuration, source = await kubeconfig.load(None, None, IN_CLUSTER, **pod_files(tmp_path))
    assert source.in_cluster
    assert configuration.host == "https://10.96.0.1:443"
    assert configuration.api_key["BearerToken"] == "Bearer pod-token"


async def test_in_cluster_without_a_mounted_token(tmp_path: Path) -> None:
    files = pod_files(tmp_path, without="token_file")
    assert await problem(None, environ=IN_CLUSTER, **files) == (
        f"in-cluster configuration is incomplete: the ServiceAccount token {files['token_file']} does not exist: "
        "mount the ServiceAccount token (automountServiceAccountToken must not be false), or pass "
        "--kubeconfig / RECONCILER_KUBECONFIG"
    )


async def test_in_cluster_without_the_ca(tmp_path: Path) -> None:
    files = pod_files(tmp_path, without="ca_file")
    line = await problem(None, environ=IN_CLUSTER, **files)
    assert line.startswith(f"in-cluster configuration is incomplete: the cluster CA certificate {files['ca_file']}")


async def test_in_cluster_without_the_service_port(tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert await problem(None, environ=environ, **pod_files(tmp_path)) == (
        "in-cluster configuration is incomplete: $KUBERNETES_SERVICE_PORT is unset or empty: "
        "pass --kubeconfig / RECONCILER_KUBECONFIG"
    )


async def test_a_context_without_a_kubeconfig_in_a_cluster(tmp_path: Path) -> None:
    assert await problem(None, context="a", environ=IN_CLUSTER, **pod_files(tmp_path)) == (
        "--context / RECONCILER_CONTEXT is set but no kubeconfig is (in-cluster configuration has no contexts): "
        "pass --kubeconfig / RECONCILER_KUBECONFIG too, or unset the context"
    )
