"""A client for the Moondream HTTP API. It knows nothing of MCP."""

from __future__ import annotations

import httpx2

from .base import APIClient
from .batch import Batches
from .chat import Chat
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    InvalidRequestError,
    MoondreamError,
    NotConfiguredError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    StreamError,
    UnexpectedResponseError,
)
from .skills import Sampling, Skills
from .tuning import DEFAULT_TRAIN_TIMEOUT, Tuning


class MoondreamClient:
    """Every resource of the API over one connection pool; use as ``async with``."""

    def __init__(
        self,
        *,
        endpoint: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry_after_cap: float = 30.0,
        rate_limit: float | None = None,
        train_timeout: float = DEFAULT_TRAIN_TIMEOUT,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.api = APIClient(
            endpoint=endpoint,
            api_key=api_key,
            timeout=timeout,
            retry_after_cap=retry_after_cap,
            rate_limit=rate_limit,
            transport=transport,
        )
        self.skills = Skills(self.api)
        self.tuning = Tuning(self.api, train_timeout=train_timeout)
        self.batches = Batches(self.api)
        self.chat = Chat(self.api)

    async def __aenter__(self) -> MoondreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.api.aclose()


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GoneError",
    "InvalidRequestError",
    "MoondreamClient",
    "MoondreamError",
    "NotConfiguredError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "Sampling",
    "ServerError",
    "StreamError",
    "UnexpectedResponseError",
]
