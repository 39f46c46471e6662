"""The application factory: REST API, the published tree and the pages, on one settings object."""

import logging

from fastapi import FastAPI

from api import errors, metrics
from api.answers import AnswerCache
from api.auth import AuthenticateFirst
from api.routes import builds, bundles, docs, feeds, health, images, kernel_sources, pages, repos, tree
from api.timeouts import BodyDeadline
from api.tree_fast_path import SmallFileAnswers
from api.uploads import CapJsonBodies
from ofedrepo import __version__, logs
from ofedrepo.bundles.store import BundleStore
from ofedrepo.config import Settings
from ofedrepo.db import (
    REQUEST_LOCK_WAIT_SECONDS,
    REQUEST_STATEMENT_SECONDS,
    make_engine,
    read_only_sessions,
    session_factory,
)
from ofedrepo.images.catalog import ImageCatalog
from ofedrepo.storage import DataDir


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; migrations are the caller's business (``ofedrepo serve`` runs them first)."""
    settings = settings or Settings()
    if not logging.getLogger().handlers:
        # A web process of `ofedrepo serve --workers N` is spawned afresh: the log the command configured is not
        # its own (without this, no access lines and bare warnings).
        logs.configure(settings.log_format, logging.INFO)
    app = FastAPI(
        title="ofedrepo",
        version=__version__,
        description="MLNX_OFED kernel modules rebuilt for the kernel inside your images, published as yum "
        "repositories for DiskImage-Builder's `mlnx-ofed` element.",
        docs_url=None,  # served by api.routes.docs, with its assets (never from a CDN)
        redoc_url=None,
    )
    engine = make_engine(settings.resolved_database_url, REQUEST_LOCK_WAIT_SECONDS, REQUEST_STATEMENT_SECONDS)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.read_sessions = read_only_sessions(engine)
    app.state.answers = AnswerCache()
    app.state.data = DataDir(settings.data_dir).ensure()
    app.state.small_files = SmallFileAnswers(app.state.data.repos)  # answered by the protocol: api/tree_fast_path.py
    app.state.images = ImageCatalog(settings, app.state.sessions)
    app.state.bundles = BundleStore(settings, app.state.sessions)
    errors.install(app)
    # Added last, runs first: a stalled body is cut off, no body is read for a caller without a token, and JSON
    # bodies are capped.
    app.add_middleware(CapJsonBodies)
    app.add_middleware(AuthenticateFirst, settings=settings)
    app.add_middleware(BodyDeadline, seconds=settings.http_timeout, min_rate=settings.http_min_body_rate)
    metrics.install(app)
    app.include_router(tree.router)  # first: yum clients make most requests, and routes are matched in order
    app.include_router(health.router)
    app.include_router(repos.router)
    app.include_router(images.router)
    app.include_router(bundles.router)
    app.include_router(builds.router)
    app.include_router(feeds.router)
    app.include_router(kernel_sources.router)
    app.include_router(pages.router)
    docs.install(app)

    return app
