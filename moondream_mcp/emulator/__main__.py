"""`python -m moondream_mcp.emulator`: the emulator in the foreground."""

from .serve import main

main()
