"""One HTTP connection pool to the API server, configured from kubernetes-asyncio's `Configuration`.

kubernetes-asyncio's `ApiClient.call_api` costs more per request than the request itself on a busy
controller (profiled under a challenge storm: ~35% of the controller's CPU in the client stack). Its
session is opened with `trust_env=True`, so aiohttp looks up ~/.netrc on a worker thread for every
request (14-17% of CPU alone), and every body goes through `sanitize_for_serialization`. We keep the
configuration kubernetes-asyncio loads (server, TLS files, tokens and their refresh hook) and send the
requests ourselves: the proxy is read from the environment once, the JSON is encoded once, the token is
read through the configuration's refresh hook on every request, as `call_api` does.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from reconciler.kube import k8s

READ_BUFFER = 2**21  # a watch line can carry an object of up to etcd's 1.5 MiB request limit
POOL_SIZE = 100


def ssl_context(configuration: k8s.Configuration) -> ssl.SSLContext:
    """The same trust kubernetes-asyncio's own session would use (CA file, client certificate, verify)."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def proxy_for(host: str, configured: str | None, environ_proxies: dict[str, str] | None = None) -> str | None:
    """The kubeconfig's `proxy-url`, else HTTPS_PROXY/HTTP_PROXY unless NO_PROXY names the server.

    Resolved once at start-up: `trust_env` would redo it (and read ~/.netrc) on every request."""
    if configured:
        return configured
    parts = urlsplit(host)
    proxies = urllib.request.getproxies() if environ_proxies is None else environ_proxies
    proxy = proxies.get(parts.scheme or "https")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


class Transport:
    """Sends one request and returns the open response; the caller reads and releases it."""

    def __init__(self, configuration: k8s.Configuration) -> None:
        self.configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        self._proxy = proxy_for(self.host, configuration.proxy)
        self._server_hostname: str | None = configuration.tls_server_name or None
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        ssl_arg: ssl.SSLContext | bool = ssl_context(self.configuration) if self.host.startswith("https") else False
        connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=ssl_arg)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=READ_BUFFER)
        return self._session

    async def send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        headers: dict[str, str],
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        session = self._session or self._open()
        token = await self.configuration.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        return await session.request(
            method,
            self.host + path,
            params=query,
            data=data,
            headers=headers,
            timeout=timeout,
            proxy=self._proxy,
            proxy_headers=self.configuration.proxy_headers,
            server_hostname=self._server_hostname,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
