"""Answers kept for a moment: the repo a client polls.

``GET /api/v1/repos/{id}`` is what clients poll (the DIB element, dashboards), most of the time for a repo
whose answer did not change; computing it costs a thread hop, a database session and the model's validation,
ten times the framework's own work. So each process keeps the answer bytes for ``FRESH_SECONDS``: a client may
see a build's state or a new version up to that much later than the database says (``Cache-Control`` tells
it), never a wrong one; a change this process makes itself (a request, a cancel) forgets the repo's answers at
once.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

#: Seconds an answer about a repo's current state is served again without asking the database.
FRESH_SECONDS = 1.0
#: Answers kept at most (the least recently stored go first).
MAX_ANSWERS = 4096


class AnswerCache:
    """Bytes and their media type by key, each until its moment passes; routes of the event loop and of the
    thread pool (which forget) share it."""

    def __init__(self, max_answers: int = MAX_ANSWERS) -> None:
        self._answers: OrderedDict[Hashable, tuple[float, bytes, str]] = OrderedDict()
        self._max = max_answers
        self._lock = threading.Lock()
        self._forgotten = 0
        """How many times answers were forgotten: an answer computed before a change is not stored after it."""

    def generation(self) -> int:
        """Taken before computing an answer, given back to ``put``."""
        return self._forgotten

    def get(self, key: Hashable) -> tuple[bytes, str] | None:
        with self._lock:
            found = self._answers.get(key)
            if found is None:
                return None
            until, body, media_type = found
            if time.monotonic() >= until:
                del self._answers[key]
                return None
            return body, media_type

    def put(self, key: Hashable, body: bytes, media_type: str, seconds: float, generation: int) -> None:
        """Keep an answer computed since ``generation``, unless answers were forgotten meanwhile (it may then
        be older than a change this process made)."""
        with self._lock:
            if generation != self._forgotten:
                return
            self._answers[key] = (time.monotonic() + seconds, body, media_type)
            self._answers.move_to_end(key)
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)

    def forget(self, repo_id: int) -> None:
        """Every answer about ``repo_id`` (keys are ``(route, repo_id, ...)``)."""
        with self._lock:
            self._forgotten += 1
            for key in [key for key in self._answers if isinstance(key, tuple) and key[1:2] == (repo_id,)]:
                del self._answers[key]
