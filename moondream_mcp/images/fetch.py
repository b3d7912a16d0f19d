"""Downloading image URLs an agent names, without becoming a proxy into the private network.

The address check lives in the network backend, at the moment a TCP connection is made: the host is
resolved once, every address it resolves to is vetted, and the socket is opened to a vetted address
itself. So there is no gap between checking and connecting for DNS rebinding to slip through, every
redirect hop is checked the same way, and odd spellings of an IP (2130706433, 0x7f000001, 127.1) are
judged by what the resolver makes of them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Self

import anyio
import httpcore2
import httpx2

from .errors import ImageError, describe

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]
Resolver = Callable[[str, int], Awaitable[list[str]]]
Sink = Callable[[bytes], Awaitable[None]]  # where downloaded bytes go, chunk by chunk
Reserve = Callable[[int], Awaitable[None]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # embeds an IPv4 address in its last 32 bits
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ALLOW_PRIVATE = "Set MOONDREAM_MCP_ALLOW_PRIVATE_URLS=true to allow it."


def is_public_address(address: IPAddress) -> bool:
    """True for addresses on the public internet; False for anything loopback, private, link-local…"""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address are judged by that address.
        if address.ipv4_mapped is not None:
            return is_public_address(address.ipv4_mapped)
        if address in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:
            return is_public_address(address.sixtofour)
        if address.teredo is not None or address.is_site_local:
            return False
    elif address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressRefused(Exception):
    """A host resolved to an address the policy forbids. Raised from inside the connection pool."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}")
        self.host = host
        self.address = address


class UnresolvableHost(Exception):
    def __init__(self, host: str) -> None:
        super().__init__(f"cannot resolve {host}")
        self.host = host


class VettingBackend(httpcore2.AnyIOBackend):
    """Connects only to addresses the policy allows, and only to the very address it vetted."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = system_resolver) -> None:
        self._policy = policy
        self._resolver = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface names it
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            candidates = await self._resolver(host, port)
        except OSError:
            raise UnresolvableHost(host) from None
        if not candidates:
            raise UnresolvableHost(host)
        addresses: list[str] = []
        for candidate in candidates:
            try:
                address = ipaddress.ip_address(candidate)
            except ValueError:
                raise AddressRefused(host, candidate) from None
            # One forbidden answer refuses the host: a name that also points inside is not "public".
            if not self._policy(address):
                raise AddressRefused(host, str(address))
            addresses.append(str(address))
        failure: Exception | None = None
        for vetted in addresses:
            try:
                return await super().connect_tcp(vetted, port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, *args: object, **kwargs: object) -> httpcore2.AsyncNetworkStream:
        raise AddressRefused("a unix socket", "a local path")


class _VettedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, backend: VettingBackend) -> None:
        tls = httpx2.create_ssl_context(trust_env=False)
        super().__init__(verify=tls, trust_env=False)
        # The pool is rebuilt around the vetting backend: httpx2 offers no other way to pass one.
        # TLS still verifies the certificate for the hostname: httpcore wraps the socket with the
        # URL's host as server_hostname, whatever address the socket went to.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=tls,
            network_backend=backend,
            max_connections=16,
            keepalive_expiry=5.0,
        )


class UrlFetcher:
    """Downloads http(s) URLs with a byte cap, a whole-download time cap and vetted addresses."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        max_redirects: int,
        policy: AddressPolicy,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._backend = VettingBackend(policy, resolver)
        self._entered = False
        self._client: httpx2.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        # The HTTP client is made with the first URL fetched: building one loads the CA certificates.
        self._entered = True
        return self

    def _http(self) -> httpx2.AsyncClient:
        if self._client is not None:
            return self._client
        self._client = httpx2.AsyncClient(
            transport=_VettedTransport(self._backend),
            trust_env=False,  # no proxies or netrc from the environment: the vetted socket is the route
            follow_redirects=False,  # each hop's scheme is checked here, its address in the backend
            # No cookies kept: one agent-chosen URL must not hand state to the next.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            timeout=httpx2.Timeout(self._timeout),
            headers={
                "User-Agent": "moondream-mcp",
                "Accept": "image/*,*/*;q=0.5",
                # Raw bytes are counted against the cap; a compressed body could expand past it unseen.
                "Accept-Encoding": "identity",
            },
        )
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        self._entered = False
        if client is not None:
            await client.aclose()

    async def fetch(self, url: str, reserve: Reserve | None = None) -> bytes:
        """The body of `url`. `reserve(n)` is awaited before a body of up to n bytes is read."""
        body = bytearray()

        async def keep(chunk: bytes) -> None:
            body.extend(chunk)

        await self.fetch_to(url, keep, reserve)
        return bytes(body)

    async def fetch_to(self, url: str, write: Sink, reserve: Reserve | None = None) -> int:
        """Download `url` chunk by chunk into `write` (a file, say), under the same caps; returns its size."""
        if not self._entered:
            raise RuntimeError("UrlFetcher used outside `async with`")
        label = describe(url)
        try:
            # One deadline for the whole download, redirects included: per-read timeouts alone let a
            # server drip one byte at a time forever.
            with anyio.fail_after(self._timeout):
                return await self._follow(self._http(), url, label, write, reserve)
        except TimeoutError:
            raise ImageError(
                f"downloading {label} took longer than {self._timeout:g} s; "
                "try a smaller or faster source, or raise MOONDREAM_MCP_FETCH_TIMEOUT."
            ) from None
        except AddressRefused as exc:
            where = exc.address if exc.host == exc.address else f"{exc.host} resolves to {exc.address}, which"
            raise ImageError(
                f"refused to fetch {label}: {where} is a loopback, private, link-local or otherwise "
                f"non-public address. {_ALLOW_PRIVATE}"
            ) from None
        except UnresolvableHost as exc:
            raise ImageError(f"cannot download {label}: the host {exc.host} cannot be resolved.") from None
        except httpx2.TimeoutException:
            raise ImageError(f"downloading {label} timed out; try again or give a local file.") from None
        except httpx2.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ImageError(f"cannot download {label}: {describe(reason)}") from None

    async def _follow(
        self, client: httpx2.AsyncClient, url: str, label: str, write: Sink, reserve: Reserve | None
    ) -> int:
        try:
            current = httpx2.URL(url)
        except httpx2.InvalidURL:
            raise ImageError(f"not a valid URL: {label}") from None
        for hop in range(self._max_redirects + 1):
            if current.scheme not in ("http", "https"):
                where = "it redirects to" if hop else "it is"
                raise ImageError(
                    f"refused to fetch {label}: {where} a {current.scheme}: URL; only http and https are fetched."
                )
            response = await client.send(client.build_request("GET", current), stream=True)
            try:
                if response.has_redirect_location:
                    if hop == self._max_redirects:
                        raise ImageError(f"refused to fetch {label}: more than {self._max_redirects} redirects.")
                    if response.next_request is None:
                        raise ImageError(f"cannot download {label}: a redirect has an invalid Location.")
                    current = response.next_request.url
                    continue
                return await self._read_body(response, label, write, reserve)
            finally:
                await response.aclose()
        raise AssertionError("unreachable: the loop returns or raises")

    async def _read_body(self, response: httpx2.Response, label: str, write: Sink, reserve: Reserve | None) -> int:
        if response.status_code != 200:
            raise ImageError(f"cannot download {label}: the server answered HTTP {response.status_code}.")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ImageError(f"cannot download {label}: the server sent it {encoding}-compressed, though asked not to.")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise ImageError(self._too_large(label))
        if reserve is not None:
            await reserve(int(declared) if declared.isdigit() else self._max_bytes)
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self._max_bytes:
                raise ImageError(self._too_large(label))
            await write(chunk)
        if not size:
            raise ImageError(f"cannot download {label}: the response is empty.")
        return size

    def _too_large(self, label: str) -> str:
        return (
            f"the download is too large: {label} is over the limit of {self._max_bytes} bytes; "
            "give a smaller image or raise MOONDREAM_MCP_MAX_FILE_BYTES."
        )
