"""ULIDs: 26-character, time-ordered ids in Crockford base32, as the tuning API hands out."""

from __future__ import annotations

import re
import secrets
import threading
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_RANDOM_BITS = 80


class UlidGenerator:
    """Monotonic ULIDs: 48 bits of Unix milliseconds, then 80 random bits.

    Within one millisecond the random part counts up instead of being drawn again, so ids sort in the
    order they were made: sorting by id is sorting by age.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (-1, 0)

    def new(self, now_ms: int | None = None) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
            last_ms, last_random = self._last
            if ms <= last_ms:
                ms, randomness = last_ms, last_random + 1
                if randomness >> _RANDOM_BITS:  # 2^80 ids in one millisecond: borrow the next one
                    ms, randomness = ms + 1, secrets.randbits(_RANDOM_BITS - 1)
            else:
                # One bit short of the full width leaves room to count up within the millisecond.
                randomness = secrets.randbits(_RANDOM_BITS - 1)
            self._last = (ms, randomness)
        return encode(ms << _RANDOM_BITS | randomness)


def encode(value: int) -> str:
    """A 128-bit integer as 26 Crockford base32 characters."""
    chars = []
    for _ in range(26):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_ulid(text: object) -> bool:
    return isinstance(text, str) and ULID_PATTERN.fullmatch(text) is not None


def timestamp_ms(ulid: str) -> int:
    """The milliseconds encoded in a ULID's first ten characters."""
    value = 0
    for char in ulid[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value
