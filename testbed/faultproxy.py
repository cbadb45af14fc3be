"""An HTTPS proxy of our own between the reconciler and the API server, for the faults Toxiproxy (TCP only)
cannot make: answers of 429 (with Retry-After), 500 and 503 to a set fraction of requests, and watch streams
that are cut or stalled (connection open, no bytes) while every other request goes through.

It terminates TLS with a certificate the test bed's CA signs (the API server's own serving certificate, valid
for 127.0.0.1) and re-originates each request to the upstream (the API server, or a Toxiproxy in front of
it). It runs as its own process (``python -m testbed.faultproxy``) so a storm in the test process cannot
slow it down and its counts outlive a SIGKILLed reconciler; ``FaultProxy`` is the component, and its
control API (plain HTTP, another port) sets the faults and reads the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import ssl
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import httpx
from aiohttp import web

from testbed.errors import ComponentError
from testbed.paths import REPO_ROOT
from testbed.ports import free_loopback_ports
from testbed.process import Component

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
)
INJECTABLE = (429, 500, 503)
DROP = 0
"""As an injected "code": the connection is closed without an answer."""


class FaultProxyError(ComponentError):
    """The fault proxy did not start or its control API failed."""


@dataclass
class _State:
    """What the proxy does now (set through the control API) and what it has seen."""

    fail_ratio: float = 0.0
    codes: tuple[int, ...] = INJECTABLE
    retry_after: int = 1
    fail_watches: bool = True
    """Injected failures also hit watch requests (a watch that cannot open is retried by the informer)."""
    only_writes: bool = False
    """Injected failures hit only writes (POST, PUT, PATCH, DELETE): e.g. 403s of an authorizer that has not
    synced yet after an API server restart, as the reconciler's informers keep their open watches."""
    rng: random.Random = field(default_factory=lambda: random.Random(13))
    counts: Counter[str] = field(default_factory=Counter)
    watches: dict[int, _Stream] = field(default_factory=dict)


@dataclass(eq=False)
class _Stream:
    """One open watch response being relayed."""

    request: web.Request
    path: str
    relaying: asyncio.Event = field(default_factory=asyncio.Event)


def _status_body(code: int) -> bytes:
    reason = {403: "Forbidden", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}.get(
        code, "InternalError"
    )
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}
    message = f"injected by testbed.faultproxy ({code})"
    if code == 403:  # worded as the RBAC authorizer words a denial, which is what the reconciler tells apart
        message = f'{message}: User "system:serviceaccount:injected" cannot write resource "any" in API group ""'
    return json.dumps(status | {"message": message}).encode()


class _Proxy:
    def __init__(self, upstream: str, upstream_ca: Path, seed: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.state = _State(rng=random.Random(seed))
        self.ssl = ssl.create_default_context(cafile=str(upstream_ca))
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ssl=self.ssl, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    # -- the proxied side ------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        st = self.state
        watch = request.query.get("watch") in ("true", "1")
        kind = "watch" if watch else request.method.lower()
        st.counts["requests"] += 1
        st.counts[f"requests:{kind}"] += 1
        write = request.method in ("POST", "PUT", "PATCH", "DELETE")
        hit = (st.fail_watches or not watch) and (write or not st.only_writes)
        if st.fail_ratio > 0 and hit and st.rng.random() < st.fail_ratio:
            code = st.rng.choice(st.codes)
            st.counts["injected"] += 1
            st.counts[f"injected:{code}"] += 1
            if code == DROP:
                _drop(request)
                raise web.HTTPBadGateway()
            headers = {"Content-Type": "application/json"}
            if code == 429:
                headers["Retry-After"] = str(st.retry_after)
            await request.read()
            return web.Response(status=code, body=_status_body(code), headers=headers)
        return await self._forward(request, watch)

    async def _forward(self, request: web.Request, watch: bool) -> web.StreamResponse:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            upstream = await self.session.request(
                request.method, f"{self.upstream}{request.path_qs}", headers=headers, data=body or None,
                timeout=timeout, allow_redirects=False,
            )  # fmt: skip
        except (TimeoutError, aiohttp.ClientError, OSError):
            # As the reconciler would see the API server itself go away: the connection drops, no answer.
            self.state.counts["upstream_errors"] += 1
            _drop(request)
            raise web.HTTPBadGateway() from None
        self.state.counts[f"status:{upstream.status}"] += 1
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                out.headers.add(key, value)
        stream = _Stream(request, request.path) if watch else None
        try:
            await out.prepare(request)
            if stream is not None:
                stream.relaying.set()
                self.state.watches[id(stream)] = stream
            async for chunk in upstream.content.iter_any():
                if stream is not None and not stream.relaying.is_set():
                    self.state.counts["stalled_chunks"] += 1
                    await stream.relaying.wait()  # stalled: hold the bytes, keep the connection
                await out.write(chunk)
            await out.write_eof()
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            _drop(request)  # the upstream broke off (e.g. the API server restarted): so does the client's
        finally:
            upstream.release()
            if stream is not None:
                self.state.watches.pop(id(stream), None)
        return out

    # -- the control side --------------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        st = self.state
        action = request.match_info["action"]
        if action == "stats":
            return web.json_response({"counts": dict(st.counts), "open_watches": len(st.watches)})
        if action == "config":
            cfg = await request.json()
            st.fail_ratio = float(cfg.get("fail_ratio", st.fail_ratio))
            st.codes = tuple(int(c) for c in cfg.get("codes", st.codes))
            st.retry_after = int(cfg.get("retry_after", st.retry_after))
            st.fail_watches = bool(cfg.get("fail_watches", st.fail_watches))
            st.only_writes = bool(cfg.get("only_writes", False))
            return web.json_response({"ok": True})
        streams = list(st.watches.values())
        if action == "cut-watches":
            for s in streams:
                _drop(s.request)
            st.counts["cut_watches"] += len(streams)
        elif action == "stall-watches":
            for s in streams:
                s.relaying.clear()
            st.counts["stalled_watches"] += len(streams)
        elif action == "resume-watches":
            for s in streams:
                s.relaying.set()
        else:
            raise web.HTTPNotFound()
        return web.json_response({"watches": len(streams), "paths": sorted(s.path for s in streams)})


def _drop(request: web.Request) -> None:
    """Close the client's connection without an answer (a cut stream, a vanished server)."""
    if request.transport is not None:
        request.transport.close()


async def _serve(args: argparse.Namespace) -> None:
    proxy = _Proxy(args.upstream, Path(args.upstream_ca), args.seed)
    await proxy.start()
    served = web.Application()
    served.router.add_route("*", "/{tail:.*}", proxy.handle)
    control = web.Application()
    control.router.add_route("*", "/{action}", proxy.control)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    runners = []
    for app, port, context in ((served, args.port, tls), (control, args.control_port, None)):
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context, shutdown_timeout=0.1).start()
        runners.append(runner)
    print(f"fault proxy on https://127.0.0.1:{args.port} -> {args.upstream}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbed.faultproxy", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="https://HOST:PORT of the API server (or a proxy)")
    parser.add_argument("--upstream-ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--seed", type=int, default=13)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


# --- the component and its control client ----------------------------------------------------------


@dataclass(eq=False)
class FaultProxy(Component):
    """``python -m testbed.faultproxy`` in front of ``upstream``; ``url`` is what a kubeconfig points at."""

    name: ClassVar[str] = "faultproxy"
    error: ClassVar[type[ComponentError]] = FaultProxyError

    upstream: str = ""
    upstream_ca: Path = field(default_factory=Path)
    cert: Path = field(default_factory=Path)
    key: Path = field(default_factory=Path)
    seed: int = 13

    url: str = field(init=False, default="")
    control_url: str = field(init=False, default="")

    def _start(self) -> None:
        port, control = free_loopback_ports(2)
        self.url = f"https://127.0.0.1:{port}"
        self.control_url = f"http://127.0.0.1:{control}"
        argv = [
            sys.executable, "-m", "testbed.faultproxy", "--port", str(port), "--control-port", str(control),
            "--upstream", self.upstream, "--upstream-ca", str(self.upstream_ca), "--cert", str(self.cert),
            "--key", str(self.key), "--seed", str(self.seed),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        proc = self.spawn("faultproxy", argv, env)
        self.wait_ready(proc, "fault proxy control API", lambda: self.stats() is not None, 30)

    def _post(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = httpx.post(f"{self.control_url}/{action}", json=body or {}, timeout=10)
        if resp.status_code != 200:
            raise FaultProxyError(f"fault proxy {action}: {resp.status_code} {resp.text}")
        out: dict[str, Any] = resp.json()
        return out

    def configure(
        self,
        fail_ratio: float,
        codes: tuple[int, ...] = INJECTABLE,
        retry_after: int = 1,
        fail_watches: bool = True,
        only_writes: bool = False,
    ) -> None:
        """Answer ``fail_ratio`` of the requests (or of the writes) with one of ``codes`` (429 carries
        ``Retry-After``; ``DROP`` closes the connection instead of answering)."""
        config = {"fail_ratio": fail_ratio, "codes": list(codes), "retry_after": retry_after}
        self._post("config", config | {"fail_watches": fail_watches, "only_writes": only_writes})

    def cut_watches(self) -> list[str]:
        """Drop every watch connection open now; returns the paths they watched."""
        return list(self._post("cut-watches")["paths"])

    def stall_watches(self) -> list[str]:
        """Stop relaying every watch open now (connections stay open, no bytes); new requests still pass."""
        return list(self._post("stall-watches")["paths"])

    def resume_watches(self) -> None:
        self._post("resume-watches")

    def stats(self) -> dict[str, Any]:
        """``counts`` (requests, requests:<verb|watch>, injected, injected:<code>, status:<code>, ...) and
        ``open_watches``."""
        resp = httpx.get(f"{self.control_url}/stats", timeout=10)
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out


if __name__ == "__main__":
    main()
