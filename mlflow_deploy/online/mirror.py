"""The verdict on mirrored traffic: does the mirrored deployment answer as the live one does?

Azure copies requests to a mirrored deployment and throws its answers away; we compare each with
the live answer first, so a user sees "green agrees with blue on 99.7 % of 12,408 requests, p99
4.1 ms vs 3.8 ms" before moving any traffic. Only counts, latencies and the largest relative
difference of each compared pair are kept, never a payload or a prediction. The tolerance is
applied when the report is read (``summary(rtol)``), so one run of traffic can be judged at any
tolerance.
"""

import math
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

__all__ = ["DIFFERENT", "largest_difference", "MirrorReport", "DEFAULT_RTOL"]

DEFAULT_RTOL = 1e-6
DIFFERENT = math.inf  # answers that differ in shape, type or text: no tolerance makes them agree
_SAMPLES = 20_000  # latencies kept per deployment: enough for a steady p99
# numeric differences kept exactly (8 bytes each), so any tolerance can be applied later; past
# this many, a new one is judged at arrival against the default tolerance
_KEPT_DIFFERENCES = 1_000_000
_FIRST_DIFFERENCES = 20


def largest_difference(live: Any, mirror: Any) -> float:
    """The largest relative difference between two decoded JSON answers: 0.0 when identical,
    ``DIFFERENT`` when their structure, strings or booleans differ."""
    if isinstance(live, bool) or isinstance(mirror, bool):
        return 0.0 if live is mirror else DIFFERENT
    if isinstance(live, (int, float)) and isinstance(mirror, (int, float)):
        if live == mirror:
            return 0.0
        if math.isnan(live) or math.isnan(mirror):
            return DIFFERENT
        return abs(live - mirror) / max(abs(live), abs(mirror))
    if isinstance(live, list) and isinstance(mirror, list):
        if len(live) != len(mirror):
            return DIFFERENT
        return max((largest_difference(a, b) for a, b in zip(live, mirror)), default=0.0)
    if isinstance(live, dict) and isinstance(mirror, dict):
        if live.keys() != mirror.keys():
            return DIFFERENT
        return max((largest_difference(live[k], mirror[k]) for k in live), default=0.0)
    return 0.0 if live == mirror else DIFFERENT


def _percentile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


@dataclass
class MirrorReport:
    """The running report of one mirrored deployment (kept by the gateway, in memory)."""

    mirrored: int = 0  # copies sent
    dropped: int = 0  # copies not sent because the mirror queue was full
    errors: Counter = field(default_factory=Counter)  # mirror answers that were not 200, by status
    live_errors: int = 0  # copies whose live answer was not 200: nothing to compare with
    compared: int = 0
    identical: int = 0
    structural: int = 0  # answers no tolerance reconciles (DIFFERENT)
    numeric: array = field(default_factory=lambda: array("d"))  # finite, nonzero differences
    overflow_within: int = 0  # past _KEPT_DIFFERENCES: within DEFAULT_RTOL
    overflow_beyond: int = 0
    first_differences: List[Tuple[str, float]] = field(default_factory=list)
    live_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    mirror_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def record(self, request_id: str, live_status: int, live_answer: Any, live_ms: float,
               mirror_status: Optional[int], mirror_answer: Any, mirror_ms: float) -> None:
        """One mirrored request, once both answers are in. ``mirror_status`` None: no answer
        (timed out or the connection failed); its key in ``errors`` is then "no answer"."""
        if mirror_status != 200:
            self.errors[str(mirror_status) if mirror_status else "no answer"] += 1
            return
        self.mirror_ms.append(mirror_ms)
        self.live_ms.append(live_ms)
        if live_status != 200:
            self.live_errors += 1
            return
        difference = largest_difference(live_answer, mirror_answer)
        self.compared += 1
        if difference == 0.0:
            self.identical += 1
        elif difference == DIFFERENT:
            self.structural += 1
        elif len(self.numeric) < _KEPT_DIFFERENCES:
            self.numeric.append(difference)
        elif difference <= DEFAULT_RTOL:
            self.overflow_within += 1
        else:
            self.overflow_beyond += 1
        if difference > 0 and len(self.first_differences) < _FIRST_DIFFERENCES:
            self.first_differences.append((request_id, difference))

    def summary(self, rtol: float = DEFAULT_RTOL) -> Dict[str, Any]:
        compared = self.compared
        within = (self.identical + sum(1 for d in self.numeric if d <= rtol)
                  + self.overflow_within)
        return {
            "requests_mirrored": self.mirrored,
            "mirror_dropped": self.dropped,
            "compared": compared,
            "identical": self.identical,
            "agreeing": within,
            "differing": compared - within,
            "agreement": round(within / compared, 6) if compared else None,
            "rtol": rtol,
            "mirror_errors": dict(self.errors),
            "live_errors": self.live_errors,
            "latency_ms": {
                "live": {"p50": _percentile(list(self.live_ms), 0.50),
                         "p99": _percentile(list(self.live_ms), 0.99)},
                "mirror": {"p50": _percentile(list(self.mirror_ms), 0.50),
                           "p99": _percentile(list(self.mirror_ms), 0.99)},
            },
            "first_differing_request_ids": [
                rid for rid, difference in self.first_differences if difference > rtol][:5],
        }
