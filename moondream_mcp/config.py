"""Settings from environment variables and command-line flags, built once and passed in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit, urlunsplit

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CLOUD_ENDPOINT = "https://api.moondream.ai/v1"
STATION_ENDPOINT = "http://localhost:2020/v1"
IN_FLIGHT = 8  # API requests one job keeps in flight; the client's shared rate limiter paces them


def is_cloud(endpoint: str) -> bool:
    """Whether an endpoint is Moondream Cloud (keys required, a default rate limit), judged by its host."""
    return (urlsplit(endpoint).hostname or "") == urlsplit(CLOUD_ENDPOINT).hostname


def split_credentials(endpoint: str) -> tuple[str, tuple[str, str] | None]:
    """The endpoint without the user:password it may carry (http://user:password@host/v1), and those."""
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def _env(name: str) -> AliasChoices:
    # The field name is accepted too, so tests and flags can pass settings by keyword.
    return AliasChoices(name)


class Settings(BaseSettings):
    """Everything the server can be told. Env vars first, flags (passed as keywords) override them."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("MOONDREAM_API_KEY"),
        description="Moondream API key, sent as X-Moondream-Auth. Not needed for Moondream Station.",
    )
    endpoint: str = Field(
        default=CLOUD_ENDPOINT,
        validation_alias=_env("MOONDREAM_ENDPOINT"),
        description=f"Base URL of the API: the cloud ({CLOUD_ENDPOINT}) or Moondream Station ({STATION_ENDPOINT}).",
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        validation_alias=_env("MOONDREAM_TIMEOUT"),
        description="Seconds to wait for one API request.",
    )
    max_image_pixels: int = Field(
        default=2_000_000,
        ge=10_000,
        validation_alias=_env("MOONDREAM_MCP_MAX_PIXELS"),
        description="Images are downscaled to at most this many pixels before upload (the model sees ~1.9 MP).",
    )
    max_file_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_MAX_FILE_BYTES"),
        description="Largest image file, download or data URL accepted, in bytes.",
    )
    allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.home()],
        validation_alias=_env("MOONDREAM_MCP_ALLOWED_DIRS"),
        description="Directories whose files the tools may read or write (os.pathsep-separated).",
    )
    allow_private_urls: bool = Field(
        default=False,
        validation_alias=_env("MOONDREAM_MCP_ALLOW_PRIVATE_URLS"),
        description="Let image URLs point at loopback, private or link-local addresses.",
    )
    fetch_timeout: float = Field(
        default=20.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_FETCH_TIMEOUT"),
        description="Seconds allowed for downloading one image URL, redirects included.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("moondream-mcp", appauthor=False)),
        validation_alias=_env("MOONDREAM_MCP_DATA_DIR"),
        description="Where the server keeps its own state.",
    )
    rollout_ttl_hours: float = Field(
        default=24.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_ROLLOUT_TTL_HOURS"),
        description="Stored rollout sets older than this are deleted.",
    )
    rate_limit: float | None = Field(
        default=None,
        ge=0,
        validation_alias=_env("MOONDREAM_RATE_LIMIT"),
        description="Requests per second to the API, shared by every tool; 0: no limit. "
        "Default: 2 for the cloud (its limit for a new account), none for other endpoints.",
    )
    batch_part_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=95 * 1024 * 1024,
        validation_alias=_env("MOONDREAM_MCP_BATCH_PART_BYTES"),
        description="Size of each part when uploading a Batch API file: 5-95 MiB (the storage refuses parts "
        "but the last under 5 MiB; the API, parts of 100 MB or more).",
    )
    retry_after_cap: float = Field(
        default=30.0,
        ge=0,
        validation_alias=_env("MOONDREAM_MCP_RETRY_AFTER_CAP"),
        description="Longest Retry-After the client will wait for before retrying.",
    )
    token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("MOONDREAM_MCP_TOKEN"),
        description="Bearer token HTTP clients must send (Authorization: Bearer <token>). Required when "
        "the HTTP transport listens on anything but loopback; optional on loopback.",
    )
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("MOONDREAM_MCP_ALLOWED_HOSTS"),
        description="Extra Host header values the HTTP transport accepts (comma-separated, e.g. "
        "mybox.lan:8000 or mybox.lan:*), besides the address it listens on and loopback.",
    )
    http_max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=64 * 1024,
        validation_alias=_env("MOONDREAM_MCP_HTTP_MAX_BODY_BYTES"),
        description="Largest request the server accepts: an HTTP body (413 above it) or a line on stdio.",
    )
    train_timeout: float = Field(
        default=900.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_TRAIN_TIMEOUT"),
        description="Seconds to wait for one train step: steps take tens of seconds to minutes (the official "
        "SDK allows 900 s); a step answered later than this is reported as of unknown outcome.",
    )
    # Bounded work under load: image memory and decode time, HTTP connections and sessions.
    image_memory_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=64 * 1024 * 1024,
        validation_alias=_env("MOONDREAM_MCP_IMAGE_MEMORY_BYTES"),
        description="Memory all image reading and decoding in flight may use together; calls beyond it wait. "
        "An image that alone would need more is refused.",
    )
    decode_timeout: float = Field(
        default=20.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_DECODE_TIMEOUT"),
        description="Seconds one image may take to decode before it is stopped and refused.",
    )
    http_max_connections: int = Field(
        default=128,
        ge=4,
        validation_alias=_env("MOONDREAM_MCP_HTTP_MAX_CONNECTIONS"),
        description="Open HTTP connections at most; beyond it, the oldest still sending its request is closed.",
    )
    http_header_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_HTTP_HEADER_TIMEOUT"),
        description="Seconds an HTTP client has to send a request's headers, on a new or kept-alive connection.",
    )
    http_body_timeout: float = Field(
        default=60.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_HTTP_BODY_TIMEOUT"),
        description="Seconds an HTTP client has to send a request's body once its headers are in.",
    )
    http_max_sessions: int = Field(
        default=256,
        ge=1,
        validation_alias=_env("MOONDREAM_MCP_HTTP_MAX_SESSIONS"),
        description="MCP sessions kept over HTTP; a new one beyond it closes the session idle the longest.",
    )
    http_session_idle_timeout: float = Field(
        default=600.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_HTTP_SESSION_IDLE_TIMEOUT"),
        description="Seconds an HTTP session may stay idle before it is closed.",
    )

    confirm_batch_above: int = Field(
        default=500,
        ge=0,
        validation_alias=_env("MOONDREAM_MCP_CONFIRM_BATCH_ABOVE"),
        description="submit_batch asks the user first (when the client can ask) for more images than this.",
    )
    progress_every: float = Field(
        default=5.0,
        gt=0,
        validation_alias=_env("MOONDREAM_MCP_PROGRESS_EVERY"),
        description="Seconds between progress notifications while a tool waits (clients reset timeouts on them).",
    )

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("http_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("token")
    @classmethod
    def _no_blank_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty MOONDREAM_MCP_TOKEN= must mean "no token", never "the empty string is the token".
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("allowed_dirs")
    @classmethod
    def _resolve_dirs(cls, value: list[Path]) -> list[Path]:
        # Resolved once here so every containment check compares real paths with real paths.
        return [Path(os.path.expanduser(p)).resolve() for p in value]

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return Path(os.path.expanduser(value))

    @field_validator("endpoint")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def is_cloud(self) -> bool:
        return is_cloud(self.endpoint)

    @property
    def shown_endpoint(self) -> str:
        """The endpoint as it may appear in a message or a log: without any credentials in it."""
        return split_credentials(self.endpoint)[0]

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret the settings hold: scrubbed from whatever the server says."""
        held = [s.get_secret_value() for s in (self.api_key, self.token) if s is not None]
        credentials = split_credentials(self.endpoint)[1]
        return tuple(held + [c for c in credentials or () if c])

    @property
    def requests_per_second(self) -> float | None:
        """The client-side rate limit in force, None for none."""
        if self.rate_limit is None:
            return 2.0 if self.is_cloud else None
        return self.rate_limit or None

    toolsets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["all"],
        validation_alias=_env("MOONDREAM_MCP_TOOLSETS"),
        description="Toolsets to offer, comma-separated (vision, batch, training, tuning; all: every one). "
        "With fewer, the tool enable_toolset turns on another one for the session.",
    )
    read_only: bool = Field(
        default=False,
        validation_alias=_env("MOONDREAM_MCP_READ_ONLY"),
        description="Offer only tools that change nothing remote, spend no more than single inference calls "
        "and write files only in the server's data directory.",
    )

    @field_validator("toolsets", mode="before")
    @classmethod
    def _split_toolsets(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            names = [str(part).strip().lower() for part in value if str(part).strip()]
            return names or ["all"]
        return value
