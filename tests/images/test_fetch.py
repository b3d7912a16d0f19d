"""Image URLs: private addresses refused however they are spelled or reached, downloads bounded.

Every server here listens on a loopback address. To play a "public" host, a test names the exact
addresses its policy allows (127.0.0.1, say) while others on loopback (127.0.0.2) stay forbidden.
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest

from moondream_mcp.images import ImageError, ImageLoader
from moondream_mcp.images.fetch import IPAddress, is_public_address
from tests.support.pictures import canvas
from tests.support.samples import RED, colour_at, near
from tests.support.scripted_http import Request, body, declares, drip, endless, redirect, serving

pytestmark = pytest.mark.anyio

NON_PUBLIC = "is a loopback, private, link-local or otherwise non-public address."
ALLOW_PRIVATE = "Set MOONDREAM_MCP_ALLOW_PRIVATE_URLS=true to allow it."


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    canvas(size, squares=(("red", (0.0, 0.0, 1.0, 1.0)),)).save(buffer, "PNG")
    return buffer.getvalue()


def only(*addresses: str) -> Callable[[IPAddress], bool]:
    allowed = {ipaddress.ip_address(a) for a in addresses}
    return lambda address: address in allowed


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "192.0.0.170",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "2001::1",
    ],
)
def test_non_public_addresses_are_refused_by_the_default_policy(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass_the_default_policy(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


async def test_an_image_url_is_downloaded_when_private_urls_are_allowed(allowed: Path) -> None:
    async with serving() as server, ImageLoader(allowed_dirs=[allowed], allow_private_urls=True) as images:
        server.routes["/cat.png"] = body(png())
        prepared = await images.load(f"{server.url}/cat.png")

    assert (prepared.width, prepared.height) == (64, 48)
    assert near(colour_at(prepared, 0.5, 0.5), RED)


@pytest.mark.parametrize(
    "spelling",
    ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "0x7f.0.0.1", "localhost"],
)
async def test_loopback_is_refused_however_it_is_spelled(loader: ImageLoader, spelling: str) -> None:
    async with serving() as server:
        server.routes["/cat.png"] = body(png())
        with pytest.raises(ImageError) as caught:
            await loader.load(f"http://{spelling}:{server.port}/cat.png")

    assert NON_PUBLIC in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert server.requests == []


@pytest.mark.parametrize("spelling", ["0177.0.0.1", "127.000.000.001"])
async def test_zero_padded_spellings_of_loopback_are_refused_as_invalid(loader: ImageLoader, spelling: str) -> None:
    # Octal or decimal is ambiguous between resolvers; the URL parser refuses them outright.
    async with serving() as server:
        with pytest.raises(ImageError) as caught:
            await loader.load(f"http://{spelling}:{server.port}/cat.png")

    assert str(caught.value) == f"not a valid URL: http://{spelling}:{server.port}/cat.png"
    assert server.requests == []


async def test_ipv6_loopback_is_refused(loader: ImageLoader) -> None:
    async with serving("::1") as server:
        server.routes["/cat.png"] = body(png())
        with pytest.raises(ImageError) as caught:
            await loader.load(f"{server.url}/cat.png")

    assert str(caught.value) == f"refused to fetch {server.url}/cat.png: ::1 {NON_PUBLIC} {ALLOW_PRIVATE}"
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/cat.png",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fe80::1]/cat.png",
        "http://[::ffff:127.0.0.1]/cat.png",
        "https://192.168.0.1/cat.png",
    ],
)
async def test_private_and_link_local_addresses_are_refused_before_connecting(loader: ImageLoader, url: str) -> None:
    with anyio.fail_after(5):
        with pytest.raises(ImageError) as caught:
            await loader.load(url)

    assert str(caught.value).startswith(f"refused to fetch {url}: ")
    assert str(caught.value).endswith(f"{NON_PUBLIC} {ALLOW_PRIVATE}")


async def test_a_hostname_resolving_to_a_private_address_is_refused(allowed: Path) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"metadata.internal": ["169.254.169.254"]}[host]

    async with ImageLoader(allowed_dirs=[allowed], resolver=resolver) as images:
        with pytest.raises(ImageError) as caught:
            await images.load("http://metadata.internal/latest/")

    assert str(caught.value) == (
        "refused to fetch http://metadata.internal/latest/: metadata.internal resolves to 169.254.169.254, "
        f"which {NON_PUBLIC} {ALLOW_PRIVATE}"
    )


async def test_a_hostname_with_one_private_answer_among_public_ones_is_refused(allowed: Path) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "10.1.2.3"]

    async with (
        serving() as server,
        ImageLoader(allowed_dirs=[allowed], address_policy=only("127.0.0.1"), resolver=resolver) as images,
    ):
        server.routes["/cat.png"] = body(png())
        with pytest.raises(ImageError, match=r"resolves to 10\.1\.2\.3"):
            await images.load(f"http://mixed.test:{server.port}/cat.png")

    assert server.requests == []


async def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused(allowed: Path) -> None:
    async with (
        serving("127.0.0.1") as public,
        serving("127.0.0.2") as private,
        ImageLoader(allowed_dirs=[allowed], address_policy=only("127.0.0.1")) as images,
    ):
        private.routes["/secret.png"] = body(png())
        public.routes["/cat.png"] = redirect(f"{private.url}/secret.png")
        with pytest.raises(ImageError) as caught:
            await images.load(f"{public.url}/cat.png")

    assert str(caught.value) == (f"refused to fetch {public.url}/cat.png: 127.0.0.2 {NON_PUBLIC} {ALLOW_PRIVATE}")
    assert [r.path for r in public.requests] == ["/cat.png"]
    assert private.requests == []


async def test_the_same_redirect_is_followed_when_both_hosts_are_allowed(allowed: Path) -> None:
    # The control for the test above: the redirect itself works, only the address policy stopped it.
    async with (
        serving("127.0.0.1") as first,
        serving("127.0.0.2") as second,
        ImageLoader(allowed_dirs=[allowed], address_policy=only("127.0.0.1", "127.0.0.2")) as images,
    ):
        second.routes["/secret.png"] = body(png())
        first.routes["/cat.png"] = redirect(f"{second.url}/secret.png")
        prepared = await images.load(f"{first.url}/cat.png")

    assert (prepared.width, prepared.height) == (64, 48)
    assert [r.path for r in second.requests] == ["/secret.png"]


async def test_dns_rebinding_cannot_move_the_connection_after_the_check(allowed: Path) -> None:
    # The name answers with an allowed address once, then a forbidden one: a client that checks one
    # lookup and connects using another would reach the private server on the same port.
    answers = iter([["127.0.0.1"]])

    async def rebinding_resolver(host: str, port: int) -> list[str]:
        return next(answers, ["127.0.0.2"])

    async with (
        serving("127.0.0.1") as public,
        serving("127.0.0.2", public.port) as private,
        ImageLoader(allowed_dirs=[allowed], address_policy=only("127.0.0.1"), resolver=rebinding_resolver) as images,
    ):
        public.routes["/cat.png"] = body(png())
        private.routes["/cat.png"] = body(png((10, 10)))
        prepared = await images.load(f"http://pictures.test:{public.port}/cat.png")

    assert (prepared.width, prepared.height) == (64, 48)
    assert [r.headers["host"] for r in public.requests] == [f"pictures.test:{public.port}"]
    assert private.requests == []


async def test_a_download_that_never_finishes_is_cut_off_at_the_time_cap(allowed: Path) -> None:
    async with (
        serving() as server,
        ImageLoader(allowed_dirs=[allowed], allow_private_urls=True, fetch_timeout=0.5) as images,
    ):
        # A byte every 20 ms: no single read ever waits long, only the whole is too slow.
        server.routes["/slow.png"] = drip(0.02)
        with anyio.fail_after(5):
            with pytest.raises(ImageError) as caught:
                await images.load(f"{server.url}/slow.png")

    assert str(caught.value) == (
        f"downloading {server.url}/slow.png took longer than 0.5 s; "
        "try a smaller or faster source, or raise MOONDREAM_MCP_FETCH_TIMEOUT."
    )


async def test_an_endless_body_is_cut_off_at_the_byte_cap(allowed: Path) -> None:
    async with (
        serving() as server,
        ImageLoader(allowed_dirs=[allowed], allow_private_urls=True, max_file_bytes=200_000) as images,
    ):
        server.routes["/huge.png"] = endless()
        with anyio.fail_after(5):
            with pytest.raises(ImageError) as caught:
                await images.load(f"{server.url}/huge.png")

    assert str(caught.value) == (
        f"the download is too large: {server.url}/huge.png is over the limit of 200000 bytes; "
        "give a smaller image or raise MOONDREAM_MCP_MAX_FILE_BYTES."
    )


async def test_a_declared_length_over_the_cap_is_refused_before_reading(allowed: Path) -> None:
    # The server then sends nothing at all: only trusting the header can end this before the time cap.
    async with (
        serving() as server,
        ImageLoader(
            allowed_dirs=[allowed], allow_private_urls=True, max_file_bytes=200_000, fetch_timeout=60
        ) as images,
    ):
        server.routes["/huge.png"] = declares(10**12)
        with anyio.fail_after(5):
            with pytest.raises(ImageError, match="the download is too large"):
                await images.load(f"{server.url}/huge.png")


@pytest.mark.parametrize(("hops", "succeeds"), [(5, True), (6, False)])
async def test_at_most_five_redirects_are_followed(allowed: Path, hops: int, succeeds: bool) -> None:
    async with serving() as server, ImageLoader(allowed_dirs=[allowed], allow_private_urls=True) as images:
        for n in range(hops, 0, -1):
            server.routes[f"/hop{n}"] = redirect(f"/hop{n - 1}")
        server.routes["/hop0"] = body(png())
        if succeeds:
            prepared = await images.load(f"{server.url}/hop{hops}")
            assert (prepared.width, prepared.height) == (64, 48)
        else:
            with pytest.raises(ImageError) as caught:
                await images.load(f"{server.url}/hop{hops}")
            assert str(caught.value) == f"refused to fetch {server.url}/hop{hops}: more than 5 redirects."

    assert len(server.requests) == (hops + 1 if succeeds else 6)


async def test_a_redirect_to_another_scheme_is_refused(allowed: Path) -> None:
    async with serving() as server, ImageLoader(allowed_dirs=[allowed], allow_private_urls=True) as images:
        server.routes["/cat.png"] = redirect("file:///etc/passwd")
        with pytest.raises(ImageError) as caught:
            await images.load(f"{server.url}/cat.png")

    assert str(caught.value) == (
        f"refused to fetch {server.url}/cat.png: it redirects to a file: URL; only http and https are fetched."
    )


async def test_an_ftp_url_is_refused(loader: ImageLoader) -> None:
    with pytest.raises(ImageError, match=r"^unsupported image reference: ftp://example.com/cat.png; "):
        await loader.load("ftp://example.com/cat.png")


async def test_an_error_status_is_reported(allowed: Path) -> None:
    async with serving() as server, ImageLoader(allowed_dirs=[allowed], allow_private_urls=True) as images:
        with pytest.raises(ImageError) as caught:
            await images.load(f"{server.url}/missing.png")

    assert str(caught.value) == f"cannot download {server.url}/missing.png: the server answered HTTP 404."


async def test_a_downloaded_page_that_is_not_an_image_is_refused(allowed: Path) -> None:
    async with serving() as server, ImageLoader(allowed_dirs=[allowed], allow_private_urls=True) as images:
        server.routes["/cat.png"] = body(b"<html>Sign in to continue</html>", "image/png")
        with pytest.raises(ImageError, match="is not an image Pillow can read"):
            await images.load(f"{server.url}/cat.png")


async def test_the_same_url_is_downloaded_once(allowed: Path) -> None:
    async with serving() as server, ImageLoader(allowed_dirs=[allowed], allow_private_urls=True) as images:
        server.routes["/cat.png"] = body(png())
        first = await images.load(f"{server.url}/cat.png")
        second = await images.load(f"{server.url}/cat.png")

    assert second is first
    assert len(server.requests) == 1


async def test_an_unresolvable_host_is_reported(allowed: Path) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    async with ImageLoader(allowed_dirs=[allowed], resolver=resolver) as images:
        with pytest.raises(ImageError) as caught:
            await images.load("http://nowhere.invalid/cat.png")

    assert str(caught.value) == (
        "cannot download http://nowhere.invalid/cat.png: the host nowhere.invalid cannot be resolved."
    )


async def test_cookies_set_by_one_download_are_not_sent_with_the_next(allowed: Path) -> None:
    async def set_cookie(request: Request, stream: anyio.abc.ByteStream) -> None:
        content = png()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nSet-Cookie: tracker=abc; Path=/\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n"
        )
        await stream.send(head.encode() + content)

    async with serving() as server, ImageLoader(allowed_dirs=[allowed], allow_private_urls=True) as images:
        server.routes["/first.png"] = set_cookie
        server.routes["/second.png"] = body(png())
        await images.load(f"{server.url}/first.png")
        await images.load(f"{server.url}/second.png")

    assert [r.headers.get("cookie") for r in server.requests] == [None, None]
