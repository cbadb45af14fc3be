"""Pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv (its test DNS server) on loopback.

Pebble really validates HTTP-01: it resolves the identifier with the DNS server given by ``-dnsserver`` and
sends ``GET http://<identifier>:<httpPort>/.well-known/acme-challenge/<token>`` to the address it gets. Here
challtestsrv answers every A query with one address (the gateway's, settable at run time) and no AAAA
record, and ``httpPort`` is the gateway listener's port, so validation requests go through Envoy.

Only the challtestsrv DNS server and its management API run (its HTTP-01/HTTPS/DoH/TLS-ALPN servers are
disabled); every listener is on 127.0.0.1. Pebble runs with ``PEBBLE_VA_NOSLEEP=1`` (no random 0-15 s
validation delay), ``PEBBLE_WFE_NONCEREJECT=0`` (no random badNonce errors) and ``PEBBLE_AUTHZREUSE=0``
(every order gets fresh authorizations, hence challenges) unless told otherwise.

Its HTTPS certificate is the module's ``test/certs/localhost`` pair (SANs localhost, pebble, 127.0.0.1,
valid until 2027-10-03), signed by ``test/certs/pebble.minica.pem``: ACME clients must trust that CA.
Certificates Pebble issues chain to a root generated at each start: ``roots_pem()`` fetches it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import httpx
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from testbed.binaries import FullstackBinaries, find_fullstack_binaries
from testbed.errors import ComponentError, FullstackError
from testbed.ports import free_loopback_ports, free_udp_and_tcp_port
from testbed.process import Component, Process

DEFAULT_PEBBLE_ENV: Final = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


def _listening(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    return check


@dataclass(eq=False)
class _FullstackComponent(Component):
    """One full-stack binary in its own temp dir, with a minimal environment."""

    error: ClassVar[type[ComponentError]] = FullstackError

    binaries: FullstackBinaries | None = field(default=None, kw_only=True)
    ready_timeout: float = field(default=30.0, kw_only=True)

    def _binaries(self) -> FullstackBinaries:
        if self.binaries is None:
            self.binaries = find_fullstack_binaries()
        return self.binaries

    def _spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> Process:
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
        return self.spawn(self.name, argv, {**base, "HOME": str(self.data_dir), **(env or {})})


@dataclass(eq=False)
class ChallTestSrv(_FullstackComponent):
    """pebble-challtestsrv as a DNS server only: every A query gets ``default_ipv4``, no AAAA answers."""

    name: ClassVar[str] = "challtestsrv"

    default_ipv4: str
    dns_port: int = field(init=False, default=0)
    management_port: int = field(init=False, default=0)

    @property
    def dns_address(self) -> str:
        """``127.0.0.1:<port>``, what Pebble's ``-dnsserver`` takes."""
        return f"127.0.0.1:{self.dns_port}"

    def _start(self) -> None:
        self.dns_port = free_udp_and_tcp_port()
        self.management_port = free_loopback_ports(1)[0]
        proc = self._spawn(
            [
                str(self._binaries().challtestsrv),
                "-dnsserver",
                self.dns_address,
                "-management",
                f"127.0.0.1:{self.management_port}",
                "-defaultIPv4",
                self.default_ipv4,
                "-defaultIPv6",
                "",
                # Empty = disabled; their defaults would listen on all interfaces.
                "-http01",
                "",
                "-https01",
                "",
                "-doh",
                "",
                "-tlsalpn01",
                "",
            ]
        )
        listening = _listening(self.management_port)
        self.wait_ready(proc, f"challtestsrv on port {self.management_port}", listening, self.ready_timeout)

    def _manage(self, path: str, body: Mapping[str, Any]) -> None:
        resp = httpx.post(
            f"http://127.0.0.1:{self.management_port}{path}", content=json.dumps(body), timeout=5, trust_env=False
        )
        if resp.status_code != 200:
            raise FullstackError(f"challtestsrv {path}: {resp.status_code} {resp.text}")

    def set_default_ipv4(self, address: str) -> None:
        """Answer A queries for every name without its own record with ``address``."""
        self._manage("/set-default-ipv4", {"ip": address})
        self.default_ipv4 = address

    def add_a(self, host: str, addresses: list[str]) -> None:
        """A records for one name (overrides the default)."""
        self._manage("/add-a", {"host": host, "addresses": addresses})

    def clear_a(self, host: str) -> None:
        """Drop ``add_a`` records for a name."""
        self._manage("/clear-a", {"host": host})


@dataclass
class PebbleConfig:
    """The knobs of Pebble's JSON config that matter here."""

    http_port: int
    tls_port: int = 5001  # TLS-ALPN-01 validation port; nothing listens, TLS-ALPN-01 is not used
    env: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PEBBLE_ENV))
    validity_seconds: int = 7776000


@dataclass(eq=False)
class Pebble(_FullstackComponent):
    """Pebble on 127.0.0.1 (ACME directory at ``directory_url``), resolving names through ``dns_server``;
    ``env`` adds to (or overrides) ``DEFAULT_PEBBLE_ENV``."""

    name: ClassVar[str] = "pebble"

    dns_server: str
    http_port: int
    env: Mapping[str, str] | None = field(default=None, kw_only=True)
    config: PebbleConfig = field(init=False)
    port: int = field(init=False, default=0)
    management_port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.config = PebbleConfig(http_port=self.http_port)
        self.config.env.update(self.env or {})

    @property
    def directory_url(self) -> str:
        """The ACME directory."""
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def ca_file(self) -> Path:
        """The CA of Pebble's HTTPS certificate (not of the certificates it issues)."""
        assert self.binaries is not None
        return self.binaries.pebble_ca

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts Pebble's HTTPS certificate only."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def config_json(self) -> dict[str, Any]:
        """Pebble's config file."""
        assert self.binaries is not None
        return {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(self.binaries.pebble_cert),
                "privateKey": str(self.binaries.pebble_key),
                "httpPort": self.config.http_port,
                "tlsPort": self.config.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "retryAfter": {"authz": 1, "order": 1},
                "keyAlgorithm": "ecdsa",
                "profiles": {"default": {"description": "testbed", "validityPeriod": self.config.validity_seconds}},
            }
        }

    def _start(self) -> None:
        binaries = self._binaries()
        self.port, self.management_port = free_loopback_ports(2)
        config = self.data_dir / "pebble-config.json"
        config.write_text(json.dumps(self.config_json(), indent=2))
        proc = self._spawn(
            [str(binaries.pebble), "-config", str(config), "-dnsserver", self.dns_server], env=self.config.env
        )
        self.wait_ready(proc, f"pebble on port {self.port}", _listening(self.port), self.ready_timeout)

        def directory_served() -> bool:
            return httpx.get(self.directory_url, verify=self.ssl_context(), timeout=2, trust_env=False).is_success

        self.wait_ready(proc, "Pebble's ACME directory", directory_served, self.ready_timeout)

    def roots_pem(self) -> str:
        """The root of the chains Pebble issues (regenerated at every start)."""
        resp = httpx.get(
            f"https://127.0.0.1:{self.management_port}/roots/0",
            verify=self.ssl_context(),
            timeout=5,
            trust_env=False,
        )
        resp.raise_for_status()
        return resp.text


# --- an ACME client (certbot's `acme` library) -------------------------------------------------------


@dataclass(frozen=True)
class IssuedCertificate:
    """What an ACME order produced."""

    key_pem: bytes
    fullchain_pem: str
    order_url: str
    challenges: list[tuple[str, str]]  # (token path, key authorization) per answered HTTP-01 challenge

    @property
    def certificates(self) -> list[x509.Certificate]:
        """Leaf first."""
        return x509.load_pem_x509_certificates(self.fullchain_pem.encode())

    @property
    def dns_names(self) -> list[str]:
        """The leaf's DNS SANs."""
        san = self.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.DNSName)


ServeKeyAuthorization = Callable[[str, str], None]
"""Called with (path, key authorization) before a challenge is answered: make ``path`` serve it."""


class AcmeAccount:
    """An ACME account at Pebble, driving orders with HTTP-01 through whatever serves the token paths."""

    def __init__(self, pebble: Pebble, email: str = "testbed@example.test") -> None:
        self.key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.net = client.ClientNetwork(self.key, alg=ES256, user_agent="acme-gateway-reconciler-testbed")
        # `acme` passes verify_ssl to requests as `verify`, which also takes a CA bundle path.
        setattr(self.net, "verify_ssl", str(pebble.ca_file))  # noqa: B010 - typed as bool upstream
        self.net.session.trust_env = False  # never a proxy
        self.client = client.ClientV2(client.ClientV2.get_directory(pebble.directory_url, self.net), self.net)
        self.registration = self.client.new_account(
            messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        )

    def issue(
        self,
        dns_names: list[str],
        serve: ServeKeyAuthorization,
        timeout: float = 60.0,
    ) -> IssuedCertificate:
        """New order for ``dns_names``; for each HTTP-01 challenge ``serve`` the key authorization, answer it;
        then finalize with a fresh P-256 key's CSR and download the chain."""
        cert_key = ec.generate_private_key(ec.SECP256R1())
        key_pem = cert_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        order = self.client.new_order(crypto_util.make_csr(key_pem, dns_names))
        answered: list[tuple[str, str]] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            response, validation = challb.response_and_validation(self.key)
            path = challb.chall.path
            serve(path, validation)
            answered.append((path, validation))
            self.client.answer_challenge(challb, response)
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        finished = self.client.poll_and_finalize(order, deadline)
        return IssuedCertificate(key_pem, finished.fullchain_pem, finished.uri, answered)


@contextlib.contextmanager
def acme_stack(
    gateway_address: str, gateway_port: int, binaries: FullstackBinaries | None = None
) -> Iterator[tuple[ChallTestSrv, Pebble]]:
    """challtestsrv answering every name with ``gateway_address`` + Pebble validating on ``gateway_port``."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        dns = stack.enter_context(ChallTestSrv(gateway_address, binaries=binaries))
        pebble = stack.enter_context(Pebble(dns.dns_address, gateway_port, binaries=dns.binaries))
        sys.stderr.write(f"testbed: Pebble ready in {time.monotonic() - started:.1f}s at {pebble.directory_url}\n")
        yield dns, pebble
