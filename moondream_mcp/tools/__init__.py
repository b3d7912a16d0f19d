"""MCP tools by area; each module has a register(server) function."""
