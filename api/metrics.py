"""`/metrics` for Prometheus, and the middleware counting HTTP requests by route template and status."""

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ofedrepo.builds.collector import DatabaseCollector
from ofedrepo.metrics import HTTP_REQUESTS, process_registry

#: HTTP methods counted by name; anything else a client makes up is counted as "other", so that no client can
#: grow the label set (and this process's memory) by sending invented methods.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Counts every answered request; the route *template* and a closed set of methods keep the labels few."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            HTTP_REQUESTS.labels(method, template, str(status)).inc()


def install(app: FastAPI) -> None:
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector(app.state.sessions, app.state.settings.build_lease_seconds))
    own = process_registry()
    app.add_middleware(RequestMetrics)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus text format: this process's own metrics, then the deployment's from the database."""
        return Response(generate_latest(own) + generate_latest(database), media_type=CONTENT_TYPE_LATEST)
