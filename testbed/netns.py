"""Private Linux namespaces for the full stack.

Envoy Gateway binds fixed ports on every interface and reads its xDS certificates from ``/certs``; neither
is configurable in host mode (see docs/envoy-gateway.md). So the full stack runs in a fresh network
namespace that has only ``lo``: "every interface" is then loopback, nothing can reach or leave the machine,
and the fixed ports cannot collide with a parallel run. Envoy Gateway itself also gets a private mount
namespace in which our certificates appear at ``/certs``; nothing outside sees it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from testbed.errors import FullstackError
from testbed.paths import REPO_ROOT

_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1
NETNS_MARKER_ENV: Final = "TESTBED_PRIVATE_NETNS"


def network_interfaces() -> list[str]:
    """Interfaces of the calling process's network namespace (``/sys`` may show another namespace's)."""
    return [name for _, name in socket.if_nameindex()]


def in_private_netns() -> bool:
    """True when loopback is the only interface: nothing bound here can be reached from elsewhere."""
    return network_interfaces() == ["lo"]


def bring_up_loopback() -> None:
    """Set ``lo`` up (a new network namespace starts with it down); all of 127.0.0.0/8 is then local."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request + b"\0" * 22)[:18])[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP) + b"\0" * 22)


def netns_command(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run in a fresh network namespace with only ``lo`` (up).

    As root a plain ``unshare --net`` does; otherwise a user namespace maps us to root inside (needs
    unprivileged user namespaces). Root inside may bind ports below 1024 in that namespace.
    """
    if shutil.which("unshare") is None:
        raise FullstackError("`unshare` (util-linux) is required to run the full stack in a network namespace")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    boot = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); "
        "from testbed.netns import bring_up_loopback; bring_up_loopback(); "
        "os.environ[sys.argv[2]] = '1'; os.execvp(sys.argv[3], sys.argv[3:])"
    )
    return ["unshare", "--net", *user, "--", sys.executable, "-c", boot, str(REPO_ROOT), NETNS_MARKER_ENV, *argv]


def reexec_in_private_netns() -> None:
    """Replace this process by itself inside a fresh network namespace, unless already in one."""
    if in_private_netns():
        return
    if os.environ.get(NETNS_MARKER_ENV) == "1":
        raise FullstackError(f"still seeing {network_interfaces()} after entering a network namespace")
    argv = [sys.executable, *sys.orig_argv[1:]] if hasattr(sys, "orig_argv") else [sys.executable, *sys.argv]
    command = netns_command(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)


def require_private_netns(what: str) -> None:
    """Refuse to start a component whose listeners cannot be restricted to loopback outside a namespace."""
    if not in_private_netns():
        raise FullstackError(
            f"{what} binds 0.0.0.0 on fixed ports; run it inside a private network namespace "
            f"(testbed.netns.netns_command / reexec_in_private_netns), not with interfaces "
            f"{network_interfaces()}"
        )


# Runs Envoy Gateway with /certs pointing at our certificates, without touching the real root: in a new
# mount namespace (private propagation, so nothing leaks out), a tmpfs becomes the new root; every top-level
# entry of the real root is bind-mounted (recursively) or re-created (symlinks) into it, plus /certs.
# Arguments: new-root mountpoint, certs dir, working dir, command...
_GRAFT_SH: Final = r"""
set -eu
root=$1 certs=$2 workdir=$3
shift 3
mount -t tmpfs -o mode=0755 testbed-root "$root"
for entry in /* /.[!.]*; do
  [ -e "$entry" ] || [ -L "$entry" ] || continue
  name=${entry#/}
  [ "$name" = certs ] && continue
  if [ -L "$entry" ]; then
    ln -s "$(readlink "$entry")" "$root/$name"
  elif [ -d "$entry" ]; then
    mkdir "$root/$name"
    mount --rbind "$entry" "$root/$name"
  else
    : > "$root/$name"
    mount --bind "$entry" "$root/$name"
  fi
done
mkdir "$root/certs"
mount --bind -o ro "$certs" "$root/certs"
exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$workdir" "$@"
"""


def with_certs_mounted(certs: Path, new_root: Path, workdir: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that it sees ``certs`` at ``/certs`` (see ``_GRAFT_SH``)."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _GRAFT_SH,
        "graft",
        str(new_root),
        str(certs),
        str(workdir),
        *argv,
    ]
