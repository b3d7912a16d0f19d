"""moondream-mcp: Moondream's vision skills and finetuning loop as MCP tools."""

# The one place the version is written: the package metadata (pyproject.toml) reads it from here.
__version__ = "0.1.0"
