"""Deadlines for clients that connect and then stall, which would otherwise hold a connection for ever.

uvicorn times out only an idle keep-alive connection, between two requests. A client that connects and
sends nothing, or sends a request head a byte at a time, or stops in the middle of a body, is waited for
without end; a few hundred of them exhaust the process's sockets. Two guards, both ``OFEDREPO_HTTP_TIMEOUT``
seconds:

- ``DeadlineHttpToolsProtocol`` (under ``api.tree_fast_path.TreeFastPathProtocol``, the protocol ``ofedrepo
  serve`` runs uvicorn with; ``DeadlineH11Protocol`` the same on h11): the whole request head must
  arrive within the deadline of its first byte (of the connection, for a new one); then the connection is
  closed. The clock is not reset by each byte, so a trickle does not keep it open.
- ``BodyDeadline`` (a middleware): while a body is still arriving, each part must follow the previous one
  within the deadline, and once the body's first deadline is past it must have averaged
  ``OFEDREPO_HTTP_MIN_BODY_RATE`` bytes a second (a byte sent just before each deadline would otherwise hold
  the connection, and a file descriptor, for ever: 20,000 such clients exhausted the process's descriptors);
  otherwise the answer is 408 and the connection is closed.
"""

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def served_app(app: object) -> Starlette:
    """The app a protocol serves, under uvicorn's own middleware (each holds the next as ``app``): its state has
    what the process serves with, made once from the settings it read (uvicorn builds the protocols, not us, so
    they cannot be handed the settings)."""
    for _ in range(8):
        if isinstance(app, Starlette):
            return app
        app = getattr(app, "app", None)
    raise RuntimeError("this protocol serves no Starlette app")


class _HeadDeadline:
    """A deadline for each request head (see the module's docstring), for either of uvicorn's protocols: both
    keep the request in ``cycle`` and their keep-alive timer in ``timeout_keep_alive_task``."""

    cycle: Any
    timeout_keep_alive_task: asyncio.TimerHandle | None
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    logger: Any
    app: object
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)  # type: ignore[misc]

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _watch_head(self) -> None:
        if not self._waiting_for_head():
            self._stop_watching()  # the head is complete: the body's deadline is BodyDeadline's
        elif self._head_timer is None and self.timeout_keep_alive_task is None:
            # Not while uvicorn's keep-alive timer runs: between requests an idle client is its business.
            self._head_timer = self.loop.call_later(self._head_seconds(), self._head_too_slow)

    def _head_seconds(self) -> float:
        return float(served_app(self.app).state.settings.http_timeout)

    def _stop_watching(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.logger.info("closed a connection whose request head did not arrive within %g s", self._head_seconds())
            self.transport.close()


class DeadlineH11Protocol(_HeadDeadline, H11Protocol):
    """uvicorn's pure-Python h11 protocol, with a deadline for each request head."""


class DeadlineHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
    """uvicorn's httptools (llhttp) protocol, with a deadline for each request head: what ``ofedrepo serve`` runs
    (with the tree's small files answered by ``api.tree_fast_path``), on uvloop (``bench/serve.py``: 1.4x the
    requests of h11 on asyncio for an empty route, 1.2x for a database one)."""


class BodyDeadline:
    """408 when a request body stops arriving for ``seconds``, or arrives slower than ``min_rate`` bytes a
    second on average once its first ``seconds`` are past (see the module's docstring)."""

    def __init__(self, app: ASGIApp, seconds: float, min_rate: int) -> None:
        self.app = app
        self.seconds = seconds
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False
        response_started = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        received = 0

        async def receive_in_time() -> Message:
            nonlocal body_complete, received
            if body_complete:  # afterwards the app waits for a disconnect, which may rightly take long
                return await receive()
            # By then the body so far should have arrived: a grace of one deadline, then min_rate.
            due = started + self.seconds + received / self.min_rate
            wait = min(self.seconds, due - loop.time())
            too_slow = f"the request body arrived slower than {self.min_rate} bytes a second"
            if wait <= 0:
                raise HTTPException(408, too_slow)
            try:
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                stopped = f"the request body stopped arriving for {self.seconds:g} s"
                raise HTTPException(408, stopped if wait == self.seconds else too_slow) from None
            received += len(message.get("body", b""))
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_in_time, watched_send)
        except HTTPException as error:
            if error.status_code != 408 or response_started:
                raise
            answer = JSONResponse({"detail": error.detail}, status_code=408, headers={"Connection": "close"})
            await answer(scope, receive, send)
