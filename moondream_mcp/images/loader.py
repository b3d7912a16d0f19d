"""ImageLoader: any image reference an agent gives -> a PreparedImage, remembered for the next call."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from ..files import FileError, FileGuard
from .budget import MemoryBudget
from .crops import Cutouts, Region, cut
from .crops import memory_needed as crops_memory_needed
from .data_urls import decode_data_url
from .encode import Stopped, Watch, memory_needed, prepare
from .errors import ImageError, describe
from .fetch import AddressPolicy, Resolver, Sink, UrlFetcher, is_public_address, system_resolver
from .prepared import PreparedImage

if TYPE_CHECKING:
    from ..config import Settings

# Two or more letters, so a Windows drive ("C:") reads as a path, not a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_KINDS = "an absolute file path, a file:// URL, an http(s):// URL or a data:image/...;base64 URL"
MEMORY_BYTES = 1024 * 1024 * 1024
DECODE_TIMEOUT = 20.0
# Decoding is CPU-bound: a few at a time. Never fewer than two, so one slow image cannot hold up the rest.
DECODERS = max(2, min(4, os.cpu_count() or 1))

T = TypeVar("T")


class ImageLoader:
    """Turns local paths, file://, http(s):// and data: references into JPEGs ready to send.

    Use as `async with ImageLoader(...) as images:`; the context owns the HTTP client for image URLs.
    `address_policy` and `resolver` decide which addresses URLs may reach (tests inject their own).

    `memory_bytes` bounds the memory of every image in flight together, whatever the number of calls: a
    quarter for encoded bytes as read, the rest for decoding (judged from each header before decoding).
    An image is read only once its bytes fit, and decoded only once its decoding fits as well; the two
    are taken in that order and never the other way round, so waiting can never deadlock.
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
        memory_bytes: int = MEMORY_BYTES,
        decode_timeout: float = DECODE_TIMEOUT,
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
        self._recent: _LruCache[Any] = _LruCache(cache_size)  # file references -> the key of the file they named
        self._decode_timeout = decode_timeout
        self.encoded = MemoryBudget(max(1, memory_bytes // 4))
        self.decoding = MemoryBudget(max(1, memory_bytes - memory_bytes // 4))
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
            memory_bytes=settings.image_memory_bytes,
            decode_timeout=settings.decode_timeout,
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
        # A file opened moments ago and unchanged since is answered here, without a hop to a worker thread.
        key = self._recent.get(ref)
        if key is not None and self._guard.unchanged(ref, key[1]) and (hit := self._cache.get(key)) is not None:
            return hit
        async with AsyncExitStack() as held:
            async with self._located(ref, held) as located:
                if isinstance(located.key, tuple) and located.key[0] == "file":
                    self._recent.put(ref, located.key)
                if (hit := self._cache.get(located.key)) is not None:
                    return hit
                data = await located.read()
            # The bytes' memory is held until they are decoded.
            prepared = await self._prepare(located.key, located.label, data)
        return prepared

    @asynccontextmanager
    async def read(self, ref: str) -> AsyncIterator[Source]:
        """The reference's bytes as they are (not decoded), under the same checks and limits as load(); they
        count against the image memory budget until the `async with` ends."""
        async with AsyncExitStack() as held:
            async with self._located(ref, held) as located:
                data = await located.read()
            yield Source(key=located.key, label=located.label, data=data)

    async def prepare(self, source: Source) -> PreparedImage:
        """What load() would return for the reference `source` was read from."""
        if (hit := self._cache.get(source.key)) is not None:
            return hit
        return await self._prepare(source.key, source.label, source.data)

    async def cut(self, source: Source, regions: Sequence[Region], *, max_side: int, budget: int) -> Cutouts:
        """Regions of the original image (normalized, as displayed), each a JPEG of long side <= max_side."""
        data, label, max_pixels = source.data, source.label, self._max_pixels
        measure = partial(
            crops_memory_needed,
            data,
            regions,
            max_side=max_side,
            max_pixels=max_pixels,
            label=label,
            memory_limit=self.decoding.capacity,
        )
        return await self._decode(
            label,
            measure,
            lambda watch: cut(
                data, regions, max_side=max_side, max_pixels=max_pixels, budget=budget, label=label, watch=watch
            ),
        )

    @asynccontextmanager
    async def _located(self, ref: str, held: AsyncExitStack) -> AsyncIterator[_Located]:
        """A reference's cache key, its label for messages and how to read its bytes; a local file is held
        open meanwhile, so what is read is what was checked and keyed. Reading reserves the bytes' memory
        in `held`."""
        ref = ref.strip()
        if not ref:
            raise ImageError(f"the image reference is empty; give {_KINDS}.")
        label = describe(ref)
        match = _SCHEME.match(ref)
        scheme = match.group(1).lower() if match else None

        async def reserve(size: int) -> None:
            await held.enter_async_context(self.encoded.hold(size))

        if scheme == "data":
            # Keyed by digest: the cache should not hold a second copy of a multi-megabyte string.
            key = ("data", hashlib.sha256(ref.encode("utf-8", "surrogatepass")).digest())

            async def read_data() -> bytes:
                await reserve(len(ref))
                return await anyio.to_thread.run_sync(decode_data_url, ref, self._max_file_bytes)

            yield _Located(key, label, read_data)
        elif scheme in ("http", "https"):
            yield _Located(("url", ref), label, partial(self._fetcher.fetch, ref, reserve))
        elif scheme in (None, "file"):
            with _as_image_error():
                opened = await anyio.to_thread.run_sync(self._guard.open, ref)
            with opened:

                async def read_file() -> bytes:
                    # The size of the file opened (fstat), not of whatever the path names by now.
                    await reserve(opened.stat.st_size)
                    with _as_image_error():
                        return await anyio.to_thread.run_sync(opened.read)

                yield _Located(("file", opened.identity), label, read_file)
        else:
            raise ImageError(f"unsupported image reference: {label}; give {_KINDS}.")

    async def _prepare(self, key: Hashable, label: str, data: bytes) -> PreparedImage:
        measure = partial(
            memory_needed, data, max_pixels=self._max_pixels, label=label, memory_limit=self.decoding.capacity
        )
        prepared = await self._decode(
            label, measure, lambda watch: prepare(data, max_pixels=self._max_pixels, label=label, watch=watch)
        )
        self._cache.put(key, prepared)
        return prepared

    async def _decode(self, label: str, measure: Callable[[], int], work: Callable[[Watch], T]) -> T:
        """`work` in a decoder thread once the memory `measure` judges it needs is free, stopped at the deadline."""
        needed = await anyio.to_thread.run_sync(measure)
        async with self.decoding.hold(needed):
            watch = Watch(self._decode_timeout)
            try:
                return await _watched(partial(work, watch), watch, self._decoder_slots())
            except Stopped:
                raise ImageError(
                    f"decoding {label} took longer than {self._decode_timeout:g} s and was stopped; give a smaller "
                    "or simpler image (a baseline JPEG or a PNG), or raise MOONDREAM_MCP_DECODE_TIMEOUT."
                ) from None

    def _decoder_slots(self) -> anyio.CapacityLimiter:
        if self._decoders is None:
            self._decoders = anyio.CapacityLimiter(DECODERS)
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


async def _watched(work: Callable[[], T], watch: Watch, limiter: anyio.CapacityLimiter) -> T:
    """`work` in a worker thread. A cancelled call stops it at the decoder's next block, and returns only
    once the thread has let go of the image: the memory it held is then truly free again."""
    lock = threading.Lock()
    started = finished = False
    released = anyio.Event()

    def run() -> T:
        nonlocal started, finished
        with lock:
            watch.check()  # cancelled before it began
            started = True
        watch.start()
        try:
            return work()
        finally:
            with lock:
                finished = True
                waited_on = watch.cancelled
            if waited_on:
                anyio.from_thread.run_sync(released.set)

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=limiter)
    except anyio.get_cancelled_exc_class():
        with lock:
            watch.cancel()
            running = started and not finished
        if running:
            with anyio.CancelScope(shield=True):
                await released.wait()
        raise


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
