"""`python -m moondream_emulator`: the emulator in the foreground."""

from .cli import main

main()
