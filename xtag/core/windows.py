"""Fixed time windows for rate limits: which window a moment falls in (the
counter's key) and how long until the next one. Counting is done by whoever
holds the counters (Redis)."""

from __future__ import annotations

import math
import time


def window(scope: str, seconds: int, now: float | None = None) -> tuple[str, int]:
    """The counter key for the current window and the seconds until the next."""
    now = time.time() if now is None else now
    start = int(now // seconds)
    return f"xtag:rate:{scope}:{start}", max(1, math.ceil((start + 1) * seconds - now))
