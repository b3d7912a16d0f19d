"""The OpenAI-compatible chat endpoint, POST /v1/chat/completions: several images, earlier turns, streaming."""
