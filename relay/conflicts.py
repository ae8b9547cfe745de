"""Rounds of a read, decide, conditional-write loop over one table entity (optimistic concurrency).

Writers that read the same ETag collide; each collision has one winner, and a loser that reads
and writes again at once collides again in step with the others. A random pause between rounds
spreads them out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

# A burst of promotions of one model (a notebook that aliases several versions, MLflow's retries,
# catch-up) makes the writers of its state marks collide. A writer loses at most once to each other
# writer, so eight rounds carry a burst of eight (0.45 s of pauses at most); a longer contention
# is answered 503 and redelivered.
CONFLICT_TRIES = 8
CONFLICT_PAUSE_CAP_SECONDS = 0.1


def conflict_rounds(tries: int = CONFLICT_TRIES) -> Iterator[int]:
    """``tries`` round numbers, with a random pause before each but the first, growing from
    0.01 s to ``CONFLICT_PAUSE_CAP_SECONDS``."""
    for attempt in range(tries):
        if attempt:
            time.sleep(random.uniform(0, min(CONFLICT_PAUSE_CAP_SECONDS, 0.005 * 2**attempt)))  # noqa: S311 (jitter)
        yield attempt
