"""Dependencies shared by the routes: settings and a database session, and the route class that ends it."""

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from ofedrepo.bundles.store import BundleStore
from ofedrepo.config import Settings
from ofedrepo.images.catalog import ImageCatalog
from ofedrepo.models import MAX_ID
from ofedrepo.storage import DataDir

T = TypeVar("T")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_read_session(request: Request) -> Iterator[Session]:
    """A session for routes that only read: on SQLite it takes no lock, so reads never queue behind writes; its
    connection is taken in the endpoint's thread, when it first reads (``db.read_only_sessions``)."""
    with request.app.state.read_sessions() as session:
        yield session


async def in_read_session(request: Request, work: Callable[[Session], T]) -> T:
    """``work`` with a read-only session, in one thread of the pool, the session opened and closed in that
    thread: a sync route with a session dependency costs a thread hop each for the dependency's start, the
    route, the response's validation and the dependency's end, which under load is most of its time."""

    def run() -> T:
        with request.app.state.read_sessions() as session:
            return work(session)

    return await anyio.to_thread.run_sync(run)


def ending_sessions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint``, closing its sessions (ending their transactions) before it returns."""

    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()

    return wrapper


class SessionScopedRoute(APIRoute):
    """A route whose database transaction ends in the endpoint's own thread.

    On SQLite a transaction that may write holds the write lock (``BEGIN IMMEDIATE``, see ``ofedrepo.db``;
    routes that only read use ``ReadSessionDep`` and take none). Left to the dependency's teardown, a
    transaction would stay open while FastAPI validates the response and closes the session in further
    thread-pool hops; with the pool full of requests waiting for that lock, those hops never get a thread and
    the requests fail with "database is locked". Ending it in place removes the wait.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = ending_sessions(endpoint)
        super().__init__(path, endpoint, **kwargs)


async def get_data_dir(request: Request) -> DataDir:
    """In the event loop: a dependency this cheap needs no thread of the pool the API's routes share."""
    data: DataDir = request.app.state.data
    return data


async def get_image_catalog(request: Request) -> ImageCatalog:
    catalog: ImageCatalog = request.app.state.images
    return catalog


async def get_bundle_store(request: Request) -> BundleStore:
    store: BundleStore = request.app.state.bundles
    return store


IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="A row id")]

SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
DataDirDep = Annotated[DataDir, Depends(get_data_dir)]
ImageCatalogDep = Annotated[ImageCatalog, Depends(get_image_catalog)]
BundleStoreDep = Annotated[BundleStore, Depends(get_bundle_store)]
