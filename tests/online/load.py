"""A steady, bounded load of concurrent requests, for the tests that change a deployment or an
endpoint while it serves and count what failed."""
import threading
import time

import requests


class SteadyLoad:
    """``threads`` clients posting ``body`` to ``uri`` back to back until stopped, at most
    ``cap`` answers in all and ``limit_s`` seconds. An outcome is 200 when the answer is 200 (and
    equals ``expect`` when given), else the status with the first bytes of the answer, or the
    name of the client's exception."""

    def __init__(self, uri, body, threads=4, expect=None, cap=4000, limit_s=120.0):
        self.uri, self.body, self.expect, self.cap = uri, body, expect, cap
        self.ok, self.failed = 0, []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._deadline = time.monotonic() + limit_s
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self):
        with requests.Session() as session:
            while (not self._stop.is_set() and self.ok < self.cap
                   and time.monotonic() < self._deadline):
                try:
                    answer = session.post(self.uri, json=self.body, timeout=30)
                    right = self.expect is None or answer.json() == self.expect
                    outcome = 200 if answer.status_code == 200 and right else (
                        answer.status_code, answer.text[:200])
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                with self._lock:
                    if outcome == 200:
                        self.ok += 1
                    else:
                        self.failed.append(outcome)

    def served_more(self, count=20, timeout=60.0):
        """Wait until ``count`` more requests were answered (fewer if the cap comes first)."""
        target = min(self.ok + count, self.cap)
        deadline = time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < deadline, "the load stalled"
            time.sleep(0.01)
