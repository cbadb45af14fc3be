"""cert-manager's ACME issuance, simplified: a real order against Pebble, solved through the shared gateway.

cert-manager turns a Certificate into a CertificateRequest, an Order (one ACME order) and one Challenge per
authorization. Only the Challenges matter to the reconciler, so ``issue_certificate`` keeps the flow and
skips the other objects:

1. a new ACME order for the names, with a CSR of a fresh ECDSA P-256 key;
2. one Challenge per authorization, all created at once, carrying Pebble's token, the key authorization as
   ``spec.key`` and the real challenge/authorization URLs;
3. each solved by ``testbed.certmanager.run_challenge`` (Present, the revert before every self-check, N
   passes in a row), whose ``accept`` hook then does what cert-manager's challenges controller does next:
   accept the ACME challenge and wait for the authorization, whose status becomes the Challenge's state
   (then the stand-in cleans up the solver Pod and Service);
4. with every Challenge valid: finalize, download the chain, write a ``kubernetes.io/tls`` Secret;
5. whatever the outcome, delete the Challenges, as the Order controller does once the order is final, and
   handle their finalizer as the challenges controller does; the solver HTTPRoute then goes by garbage
   collection.

The self-check (``GatewaySelfCheck``) goes to the gateway's address with ``Host: <dnsName>``, where public
DNS would send cert-manager's. The ``acme`` library is synchronous: its calls run in worker threads, with
one client (connection, nonce pool) per order signing as the shared account.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import anyio
import anyio.to_thread
import httpx
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256

from testbed.certmanager import (
    DEFAULT_PARENT_REFS,
    FINAL_STATES,
    ChallengeRun,
    SolverConfig,
    create_challenge,
    run_challenge,
)
from testbed.kube import CHALLENGES, SECRETS, Kube, Obj
from testbed.pebble import AcmeAccount, Pebble
from testbed.polling import WaitTimeout, wait_for

FIELD_MANAGER: Final = "cert-manager-certificates-issuing"
AUTHZ_POLL_SECONDS: Final = 0.2
USER_AGENT: Final = "acme-gateway-reconciler-testbed"
_T = TypeVar("_T")


# --- the self-check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One self-check request: when, for which name, and the gateway's status (None: no answer)."""

    at: float
    dns_name: str
    status: int | None
    passed: bool


@dataclass
class GatewaySelfCheck:
    """cert-manager's self-check: ``GET http://<dnsName>/.well-known/acme-challenge/<token>`` must answer
    200 with the key. Sent to the gateway (``address``:``port``, loopback only) as public DNS would send it;
    every answer is kept in ``seen`` so a test can say what the gateway did."""

    address: str
    port: int = 80
    timeout: float = 5.0
    seen: list[CheckResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.address).is_loopback:
            raise ValueError(f"self-check address {self.address} is not loopback")

    async def __call__(self, ch: Obj) -> bool:
        """One pass."""
        spec = ch["spec"]
        url = f"http://{self.address}:{self.port}/.well-known/acme-challenge/{spec['token']}"
        status: int | None = None
        passed = False
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False) as http:
                resp = await http.get(url, headers={"Host": spec["dnsName"]})
            status, passed = resp.status_code, resp.status_code == 200 and resp.text == spec["key"]
        except httpx.HTTPError:
            pass
        self.seen.append(CheckResult(time.monotonic(), spec["dnsName"], status, passed))
        return passed

    def statuses(self, dns_name: str) -> list[int | None]:
        """The statuses seen for one name, in order."""
        return [r.status for r in self.seen if r.dns_name == dns_name]


# --- results -----------------------------------------------------------------------------------------


@dataclass
class ChallengeOutcome:
    """One Challenge of the order: its final state and reason, and when (seconds since the order)."""

    name: str
    dns_name: str
    token: str
    state: str | None = None
    reason: str = ""
    accepted_after: float | None = None
    final_after: float | None = None
    run: ChallengeRun = field(default_factory=ChallengeRun)


@dataclass
class IssueResult:
    """What one order produced. ``marks``: phase -> seconds since the order was requested (``order_created``,
    ``challenges_created``, ``challenges_final``, ``issued`` = chain downloaded, ``secret_written``,
    ``challenges_deleted``)."""

    namespace: str
    secret_name: str
    dns_names: list[str]
    challenges: list[ChallengeOutcome] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    account_seconds: float = 0.0  # creating the ACME account, when this call did (before the order)
    started_at: float = 0.0  # time.monotonic() when the order was requested: what ``marks`` count from
    order_url: str = ""
    fullchain_pem: str = ""
    key_pem: bytes = b""
    error: str = ""

    @property
    def issued(self) -> bool:
        """True when the chain was downloaded and the Secret written."""
        return bool(self.fullchain_pem) and "secret_written" in self.marks and not self.error

    @property
    def certificates(self) -> list[x509.Certificate]:
        """The chain, leaf first."""
        return x509.load_pem_x509_certificates(self.fullchain_pem.encode())

    @property
    def seconds_to_issued(self) -> float | None:
        """Order requested -> Secret written."""
        return self.marks.get("secret_written")


# --- the ACME side -----------------------------------------------------------------------------------


class _OrderClient:
    """An ACME client for one order, signing as ``account``: its own connection and nonce pool, so
    concurrent orders never wait for each other; its calls run in a worker thread, one at a time (the
    nonce pool is not thread-safe)."""

    def __init__(self, account: AcmeAccount) -> None:
        self.key = account.key
        net = client.ClientNetwork(account.key, account=account.registration, alg=ES256, user_agent=USER_AGENT)
        net.verify_ssl = account.net.verify_ssl  # Pebble's CA bundle path (see AcmeAccount)
        net.session.trust_env = False  # never a proxy
        self.v2 = client.ClientV2(account.client.directory, net)
        self._lock = threading.Lock()

    async def call(self, fn: Callable[[], _T]) -> _T:
        """Run one blocking ``acme`` call in a worker thread."""

        def locked() -> _T:
            with self._lock:
                return fn()

        return await anyio.to_thread.run_sync(locked)


# A final authorization's status -> the Challenge's state; anything else (deactivated, revoked) is `errored`.
_CHALLENGE_STATE_OF: Final = {"valid": "valid", "invalid": "invalid", "expired": "expired"}


@dataclass
class _Authorization:
    authzr: messages.AuthorizationResource
    challb: messages.ChallengeBody
    response: challenges.ChallengeResponse
    key_authorization: str

    @property
    def dns_name(self) -> str:
        return str(self.authzr.body.identifier.value)

    @property
    def token(self) -> str:
        return str(self.challb.chall.encode("token"))

    def error_of(self, authzr: messages.AuthorizationResource) -> str:
        for challb in authzr.body.challenges:
            if challb.uri == self.challb.uri and challb.error is not None:
                return f"{challb.error.typ}: {challb.error.detail}"
        return "no error detail"


def _http01(authzr: messages.AuthorizationResource, acme: _OrderClient) -> _Authorization:
    challb = next((c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
    if challb is None:
        raise ValueError(f"authorization {authzr.uri} offers no http-01 challenge")
    response, validation = challb.response_and_validation(acme.key)
    return _Authorization(authzr, challb, response, str(validation))


async def _accept(acme: _OrderClient, authz: _Authorization, timeout: float) -> tuple[str, str]:
    """cert-manager's Accept + wait for the authorization: (Challenge state, reason)."""
    authzr = authz.authzr

    async def settled() -> bool:
        nonlocal authzr
        authzr = (await acme.call(functools.partial(acme.v2.poll, authzr)))[0]
        return authzr.body.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING)

    try:
        await acme.call(lambda: acme.v2.answer_challenge(authz.challb, authz.response))
        await wait_for(settled, within=timeout, interval=AUTHZ_POLL_SECONDS, what="the authorization to settle")
    except WaitTimeout:
        return "errored", f"authorization still {authzr.body.status.name} after {timeout}s"
    except Exception as err:  # the ACME server's answer, whatever it is, is the Challenge's outcome
        return "errored", f"accepting the challenge failed: {err}"
    status = authzr.body.status
    state = _CHALLENGE_STATE_OF.get(status.name, "errored")
    if state == "valid":
        return state, "Successfully authorized domain"
    return state, f"Error accepting authorization: {authz.error_of(authzr)}"


def _csr(dns_names: Sequence[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, crypto_util.make_csr(key_pem, list(dns_names))


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def tls_secret(namespace: str, name: str, dns_names: Sequence[str], fullchain_pem: str, key_pem: bytes) -> Obj:
    """The Secret cert-manager writes for a Certificate (the annotations a reader looks for, no ca.crt:
    ACME issuers leave it empty)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"controller.cert-manager.io/fao": "true"},
            "annotations": {
                "cert-manager.io/certificate-name": name,
                "cert-manager.io/alt-names": ",".join(dns_names),
                "cert-manager.io/common-name": dns_names[0],
                "cert-manager.io/issuer-name": "pebble",
                "cert-manager.io/issuer-kind": "ClusterIssuer",
                "cert-manager.io/issuer-group": "cert-manager.io",
            },
        },
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": _b64(fullchain_pem), "tls.key": _b64(key_pem)},
    }


# --- the flow ----------------------------------------------------------------------------------------


async def _finalize(
    api: Kube,
    acme: _OrderClient,
    order: messages.OrderResource,
    key_pem: bytes,
    result: IssueResult,
    timeout: float,
    mark: Callable[[str], None],
) -> None:
    """Every authorization is valid: finalize, download the chain, write the Secret."""
    deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
    try:
        finished = await acme.call(lambda: acme.v2.finalize_order(order, deadline))
    except Exception as err:  # reported in the result like any failed order
        result.error = f"finalizing the order failed: {err}"
        return
    mark("issued")
    result.fullchain_pem, result.key_pem = finished.fullchain_pem, key_pem
    secret = tls_secret(result.namespace, result.secret_name, result.dns_names, finished.fullchain_pem, key_pem)
    await api.apply(SECRETS, secret, field_manager=FIELD_MANAGER)
    mark("secret_written")


async def issue_certificate(
    api: Kube,
    pebble: Pebble,
    namespace: str,
    secret_name: str,
    dns_names: Sequence[str],
    *,
    parent_refs: Collection[Obj] = DEFAULT_PARENT_REFS,
    config: SolverConfig | None = None,
    account: AcmeAccount | None = None,
    timeout: float = 120.0,
) -> IssueResult:
    """Get a certificate for ``dns_names`` the way cert-manager would, into Secret ``namespace/secret_name``.

    Never raises for an order that fails (a Challenge ending invalid, the self-check giving up, ``timeout``
    while solving): the result says what happened; its Challenges are deleted either way. ``account`` is
    reused when given (one per test keeps Pebble's work small); ``config`` sets the solver's cadence and
    self-check, and must not set ``accept`` (this function does).
    """
    result = IssueResult(namespace, secret_name, list(dns_names))
    if account is None:
        t = time.monotonic()
        account = await anyio.to_thread.run_sync(AcmeAccount, pebble)
        result.account_seconds = time.monotonic() - t
    acme = _OrderClient(account)
    t0 = result.started_at = time.monotonic()

    def mark(phase: str) -> None:
        result.marks[phase] = time.monotonic() - t0

    key_pem, csr_pem = _csr(dns_names)
    order = await acme.call(lambda: acme.v2.new_order(csr_pem))
    result.order_url = order.uri
    mark("order_created")

    authorizations = [_http01(authzr, acme) for authzr in order.authorizations]
    by_token = {a.token: a for a in authorizations}
    created: list[Obj] = []
    for authz in authorizations:
        ch = await create_challenge(
            api,
            namespace,
            authz.dns_name,
            name=f"{secret_name}-{secrets.token_hex(4)}",
            token=authz.token,
            key=authz.key_authorization,
            parent_refs=parent_refs,
            issuer_name="pebble",
            url=authz.challb.uri,
            authorization_url=authz.authzr.uri,
        )
        created.append(ch)
        result.challenges.append(ChallengeOutcome(ch["metadata"]["name"], authz.dns_name, authz.token))
    mark("challenges_created")

    outcomes = {o.token: o for o in result.challenges}

    async def accept(ch: Obj) -> tuple[str, str]:
        token = ch["spec"]["token"]
        outcomes[token].accepted_after = time.monotonic() - t0
        return await _accept(acme, by_token[token], timeout)

    solver = dataclasses.replace(config or SolverConfig(), accept=accept)

    async def solve(outcome: ChallengeOutcome) -> None:
        await run_challenge(api, namespace, outcome.name, solver, outcome.run)
        outcome.final_after = time.monotonic() - t0
        ch = await api.get_or_none(CHALLENGES, outcome.name, namespace)
        status = (ch or {}).get("status") or {}
        outcome.state, outcome.reason = status.get("state"), str(status.get("reason", ""))

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            for outcome in result.challenges:
                tg.start_soon(solve, outcome)
    mark("challenges_final")

    failed = [o for o in result.challenges if o.state != "valid"]
    if failed:
        result.error = "; ".join(
            f"{o.dns_name}: {o.state if o.state in FINAL_STATES else 'not final after the timeout'} ({o.reason})"
            for o in failed
        )
    else:
        await _finalize(api, acme, order, key_pem, result, timeout, mark)

    # The order is final: the Order controller deletes its Challenges; the challenges controller then
    # cleans up (if still processing) and drops the finalizer.
    for outcome in result.challenges:
        await api.delete(CHALLENGES, outcome.name, namespace, missing_ok=True)
    for outcome in result.challenges:
        await run_challenge(api, namespace, outcome.name, solver, outcome.run)
    mark("challenges_deleted")
    return result
