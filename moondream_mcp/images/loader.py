"""ImageLoader: any image reference an agent gives -> a PreparedImage, remembered for the next call."""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Hashable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

import anyio
import anyio.to_thread

from ..files import CheckedFile, FileError, FileGuard
from .data_urls import decode_data_url
from .errors import ImageError, describe
from .fetch import AddressPolicy, Resolver, UrlFetcher, is_public_address, system_resolver
from .prepared import PreparedImage

if TYPE_CHECKING:
    from ..config import Settings

T = TypeVar("T")
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
        self._cache: _LruCache[PreparedImage] = _LruCache(cache_size)
        self._recent: _LruCache[CheckedFile] = _LruCache(cache_size)  # file refs -> the file last read for them
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
        ref = ref.strip()
        if not ref:
            raise ImageError(f"the image reference is empty; give {_KINDS}.")
        label = describe(ref)
        match = _SCHEME.match(ref)
        scheme = match.group(1).lower() if match else None

        if scheme == "data":
            # Keyed by digest: the cache should not hold a second copy of a multi-megabyte string.
            key: Hashable = ("data", hashlib.sha256(ref.encode("utf-8", "surrogatepass")).digest())
            if (hit := self._cache.get(key)) is not None:
                return hit
            data = await anyio.to_thread.run_sync(decode_data_url, ref, self._max_file_bytes)
        elif scheme in ("http", "https"):
            key = ("url", ref)
            if (hit := self._cache.get(key)) is not None:
                return hit
            data = await self._fetcher.fetch(ref)
        elif scheme in (None, "file"):
            # A file read moments ago and not changed since is answered here, without a hop to a worker thread.
            recent = self._recent.get(ref)
            if (
                recent is not None
                and self._guard.unchanged(ref, recent)
                and (hit := self._cache.get(("file", recent.identity))) is not None
            ):
                return hit
            try:
                checked = await anyio.to_thread.run_sync(self._guard.inspect, ref)
                key = ("file", checked.identity)
                if (hit := self._cache.get(key)) is not None:
                    self._recent.put(ref, checked)
                    return hit
                data = await anyio.to_thread.run_sync(self._guard.read, checked)
            except FileError as exc:
                # To the image pipeline, a file it may not read is an image it cannot use.
                raise ImageError(str(exc)) from None
        else:
            raise ImageError(f"unsupported image reference: {label}; give {_KINDS}.")

        if self._decoders is None:
            # Each decode may hold a few hundred MB at the pixel limit: a few at a time, not 40.
            self._decoders = anyio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))
        decode = partial(prepare, data, max_pixels=self._max_pixels, label=label)
        prepared = await anyio.to_thread.run_sync(decode, limiter=self._decoders)
        self._cache.put(key, prepared)
        if scheme in (None, "file"):
            self._recent.put(ref, checked)
        return prepared


def prepare(data: bytes, *, max_pixels: int, label: str) -> PreparedImage:
    """encode.prepare, whose Pillow loads here (in a worker thread) with the first image, not with the server."""
    from . import encode

    return encode.prepare(data, max_pixels=max_pixels, label=label)


def _any_address(_address: object) -> bool:
    return True


class _LruCache(Generic[T]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, key: Hashable) -> T | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, item: T) -> None:
        if self._size <= 0:
            return
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
