from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.deps import SessionScopedRoute, SettingsDep, in_read_session
from api.schemas import Health, Ping, WorkerOut
from ofedrepo.builds.requests import live_workers

router = APIRouter(prefix="/api/v1", tags=["health"], route_class=SessionScopedRoute)


@router.get("/health", response_model=Health)
async def health(request: Request, settings: SettingsDep) -> Health:
    """Liveness, database reachability and the workers that heartbeated within a lease; monitoring polls this."""

    def check(session: Session) -> Health:
        workers: list[WorkerOut] = []
        try:
            session.execute(text("SELECT 1"))  # on the session's own connection: one per request, never two
            live = live_workers(session, settings.build_lease_seconds)
            workers = [WorkerOut.model_validate(worker, from_attributes=True) for worker in live]
            database = "ok"
        except SQLAlchemyError as error:
            database = f"error: {type(error).__name__}"
        status = "ok" if database == "ok" else "degraded"
        return Health(status=status, database=database, workers=len(workers), worker_list=workers)

    return await in_read_session(request, check)


@router.get("/ping", response_model=Ping)
async def ping() -> Ping:
    """Liveness alone, answered without the database or a thread: a load balancer's probe, and the empty route
    ``bench/serve.py`` measures every other route against."""
    return Ping()
