"""moondream-mcp: Moondream's vision skills and finetuning loop as MCP tools."""

# The one place the version is written (pyproject.toml reads it from here): looking it up in the installed
# metadata would cost every start the import of importlib.metadata.
__version__ = "0.1.0"
