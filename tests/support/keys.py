"""The one API key the test emulator accepts."""

API_KEY = "md-test-key-0123456789abcdef"
