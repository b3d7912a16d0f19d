"""The container's health check: the server answers HTTP on its port and lets its own token through.

    python healthcheck.py [URL]      (default http://127.0.0.1:8000/mcp; the token from MOONDREAM_MCP_TOKEN)

Exits 0 when healthy, 1 when not: what Docker's HEALTHCHECK reads. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/mcp"
TIMEOUT = 4.0  # seconds; Docker's own timeout for the check is 5
# A GET without an MCP session is refused by the protocol layer (4xx): that still proves the app behind
# the token check answers. These say the server is not serving us: the token or the Host was refused.
REFUSED = {401, 403, 421}


def check(url: str, token: str | None) -> tuple[bool, str]:
    headers = {"Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return False, f"no answer from {url}: {exc}"
    return status < 500 and status not in REFUSED, f"{url} answered HTTP {status}"


def main(argv: list[str]) -> int:
    healthy, why = check(argv[1] if len(argv) > 1 else DEFAULT_URL, os.environ.get("MOONDREAM_MCP_TOKEN", "").strip())
    sys.stderr.write(f"{'healthy' if healthy else 'unhealthy'}: {why}\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
