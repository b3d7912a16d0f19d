"""A local emulator of the Moondream API, for tests, benchmarks and offline development.

It is not a model. It "sees" only solid-coloured regions (by pixel colour), answers in fixed sentences
built from them, and speaks the API's wire format faithfully: the skills under /v1 (query, caption,
detect, point, segment), the OpenAI-compatible chat endpoint (/v1/chat/completions), the tuning API
under /v1/tuning (finetunes, rollouts, train steps, checkpoints), the Batch API under /v1/batch
(multipart uploads, jobs, result files), its errors, streams and limits, Moondream Station's dialect,
and faults on demand (injected statuses, dropped connections, truncated streams, delayed answers,
latency, rate limits).

Finetuning works for real, in miniature: the base model misplaces a few hard colours (orange,
purple), and RL steps whose rewards agree with the rollouts' quality shrink that error (model/policy.py).

Layout: app.py is the ASGI app (gate, faults, request log) that mounts one subpackage per API: skills/
(/v1 query, caption, detect, point, segment), chat/ (/v1/chat/completions, OpenAI-compatible), tuning/
(/v1/tuning), batch/ (/v1/batch). What they
share sits beside it: model/ (what the emulated model sees and says, and how well), errors.py, ids.py,
serve.py (uvicorn, in a thread or in the foreground) and cli.py (the one command line).

    from moondream_emulator import Emulator, EmulatorConfig, running_emulator

    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({"k"})))) as running:
        ...  # call running.url ("http://127.0.0.1:<port>/v1"); inspect running.emulator.requests

From a shell: `python -m moondream_emulator --port 2021` (or `moondream-mcp emulator`).
"""

from .app import Emulator, EmulatorConfig, LoggedRequest
from .cli import config_from_args
from .serve import RunningEmulator, running_emulator, serve_forever
from .tuning.finetunes import AppliedStep

__all__ = [
    "AppliedStep",
    "Emulator",
    "EmulatorConfig",
    "LoggedRequest",
    "RunningEmulator",
    "config_from_args",
    "running_emulator",
    "serve_forever",
]
