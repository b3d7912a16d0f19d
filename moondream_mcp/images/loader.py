"""ImageLoader: any image reference an agent gives -> a PreparedImage, remembered for the next call."""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio
import anyio.to_thread

from ..files import FileError, FileGuard
from .crops import Cutouts, Region, cut
from .data_urls import decode_data_url
from .encode import PreparedImage, prepare
from .errors import ImageError, describe
from .fetch import AddressPolicy, Resolver, Sink, UrlFetcher, is_public_address, system_resolver

if TYPE_CHECKING:
    from ..config import Settings

# Two or more letters, so a Windows drive ("C:") reads as a path, not a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_KINDS = "an absolute file path, a file:// URL, an http(s):// URL or a data:image/...;base64 URL"


class ImageLoader:
    """Turns local paths, file://, http(s):// and data: references into JPEGs ready to send.

    Use as `async with ImageLoader(...) as images:`; the context owns the HTTP client for image URLs.
    `address_policy` and `resolver` decide which addresses URLs may reach (tests inject their own).
    """

    def __init__(
        self,
        *,
        allowed_dirs: list[Path],
        allow_private_urls: bool = False,
        max_pixels: int = 2_000_000,
        max_file_bytes: int = 64 * 1024 * 1024,
        fetch_timeout: float = 20.0,
        max_redirects: int = 5,
        cache_size: int = 16,
        address_policy: AddressPolicy | None = None,
        resolver: Resolver = system_resolver,
        files: FileGuard | None = None,
    ) -> None:
        if address_policy is None:
            address_policy = _any_address if allow_private_urls else is_public_address
        self._guard = files if files is not None else FileGuard(allowed_dirs, max_file_bytes)
        self._fetcher = UrlFetcher(
            max_bytes=max_file_bytes,
            timeout=fetch_timeout,
            max_redirects=max_redirects,
            policy=address_policy,
            resolver=resolver,
        )
        self._max_pixels = max_pixels
        self._max_file_bytes = max_file_bytes
        self._cache = _LruCache(cache_size)
        self._decoders: anyio.CapacityLimiter | None = None

    @classmethod
    def from_settings(cls, settings: Settings, files: FileGuard | None = None) -> ImageLoader:
        return cls(
            files=files,
            allowed_dirs=list(settings.allowed_dirs),
            allow_private_urls=settings.allow_private_urls,
            max_pixels=settings.max_image_pixels,
            max_file_bytes=settings.max_file_bytes,
            fetch_timeout=settings.fetch_timeout,
        )

    @property
    def allowed_dirs(self) -> tuple[Path, ...]:
        return self._guard.allowed_dirs

    async def __aenter__(self) -> Self:
        await self._fetcher.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._fetcher.__aexit__(exc_type, exc, tb)

    async def load(self, ref: str) -> PreparedImage:
        async with self._located(ref) as located:
            if (hit := self._cache.get(located.key)) is not None:
                return hit
            data = await located.read()
        return await self._prepare(located.key, located.label, data)

    async def read(self, ref: str) -> Source:
        """The reference's bytes as they are (not decoded), under the same checks and limits as load()."""
        async with self._located(ref) as located:
            return Source(key=located.key, label=located.label, data=await located.read())

    async def prepare(self, source: Source) -> PreparedImage:
        """What load() would return for the reference `source` was read from."""
        if (hit := self._cache.get(source.key)) is not None:
            return hit
        return await self._prepare(source.key, source.label, source.data)

    async def cut(self, source: Source, regions: Sequence[Region], *, max_side: int, budget: int) -> Cutouts:
        """Regions of the original image (normalized, as displayed), each a JPEG of long side <= max_side."""
        work = partial(
            cut, source.data, regions, max_side=max_side, max_pixels=self._max_pixels, budget=budget, label=source.label
        )
        return await anyio.to_thread.run_sync(work, limiter=self._decoder_slots())

    @asynccontextmanager
    async def _located(self, ref: str) -> AsyncIterator[_Located]:
        """A reference's cache key, its label for messages and how to read its bytes; a local file is held
        open meanwhile, so what is read is what was checked and keyed."""
        ref = ref.strip()
        if not ref:
            raise ImageError(f"the image reference is empty; give {_KINDS}.")
        label = describe(ref)
        match = _SCHEME.match(ref)
        scheme = match.group(1).lower() if match else None

        if scheme == "data":
            # Keyed by digest: the cache should not hold a second copy of a multi-megabyte string.
            key = ("data", hashlib.sha256(ref.encode("utf-8", "surrogatepass")).digest())
            yield _Located(key, label, partial(anyio.to_thread.run_sync, decode_data_url, ref, self._max_file_bytes))
        elif scheme in ("http", "https"):
            yield _Located(("url", ref), label, partial(self._fetcher.fetch, ref))
        elif scheme in (None, "file"):
            with _as_image_error():
                opened = await anyio.to_thread.run_sync(self._guard.open, ref)
            with opened:

                async def read_file() -> bytes:
                    with _as_image_error():
                        return await anyio.to_thread.run_sync(opened.read)

                yield _Located(("file", opened.identity), label, read_file)
        else:
            raise ImageError(f"unsupported image reference: {label}; give {_KINDS}.")

    async def _prepare(self, key: Hashable, label: str, data: bytes) -> PreparedImage:
        decode = partial(prepare, data, max_pixels=self._max_pixels, label=label)
        prepared = await anyio.to_thread.run_sync(decode, limiter=self._decoder_slots())
        self._cache.put(key, prepared)
        return prepared

    def _decoder_slots(self) -> anyio.CapacityLimiter:
        if self._decoders is None:
            # Each decode may hold a few hundred MB at the pixel limit: a few at a time, not 40.
            self._decoders = anyio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))
        return self._decoders

    async def download(self, url: str, write: Sink) -> int:
        """An http(s) URL's bytes, chunk by chunk, under the address policy, byte cap and time cap of images."""
        return await self._fetcher.fetch_to(url, write)


@dataclass(frozen=True)
class _Located:
    key: Hashable
    label: str
    read: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Source:
    """An image reference's bytes as read, before decoding, with its cache key and its label for messages."""

    key: Hashable
    label: str
    data: bytes


@contextmanager
def _as_image_error() -> Iterator[None]:
    try:
        yield
    except FileError as exc:
        # To the image pipeline, a file it may not read is an image it cannot use.
        raise ImageError(str(exc)) from None


def _any_address(_address: object) -> bool:
    return True


class _LruCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, PreparedImage] = OrderedDict()

    def get(self, key: Hashable) -> PreparedImage | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, item: PreparedImage) -> None:
        if self._size <= 0:
            return
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
