"""What the tools share for the server's lifetime (AppState), and the typed context they receive (Ctx)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from .client import MoondreamClient
from .config import Settings
from .failures import EXPECTED, Explainer
from .files import FileGuard
from .images import ImageLoader
from .pictures import PictureShelf
from .store import Store
from .training import Runner
from .vision import Vision


@dataclass
class AppState:
    """The long-lived things the lifespan opens once: settings, the API client, the file guard, the image
    loader, the store and the training runner."""

    settings: Settings
    client: MoondreamClient
    files: FileGuard
    images: ImageLoader
    store: Store
    runner: Runner  # training runs in the background, for as long as the server lives

    @property
    def vision(self) -> Vision:
        return Vision(self.client, self.images)

    @cached_property
    def pictures(self) -> PictureShelf:
        """Where the pictures tools return are saved, and read back from as resources."""
        return PictureShelf(self.files)

    @property
    def explain(self) -> Explainer:
        """Turns an expected failure into the message the model reads, every secret scrubbed."""
        return Explainer(endpoint=self.settings.shown_endpoint, secrets=self.settings.secrets)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Re-raise expected failures as a ToolError the model can act on; anything else is a bug."""
        try:
            yield
        except EXPECTED as exc:
            raise ToolError(self.explain(exc)) from None


Ctx = Context[AppState, Any]
