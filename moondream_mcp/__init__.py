"""moondream-mcp: Moondream's vision skills and finetuning loop as MCP tools."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("moondream-mcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
