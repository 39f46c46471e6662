from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ReadSessionDep, SessionScopedRoute, SettingsDep
from api.schemas import Health
from ofedrepo.builds.requests import live_workers

router = APIRouter(prefix="/api/v1", tags=["health"], route_class=SessionScopedRoute)


@router.get("/health", response_model=Health)
def health(session: ReadSessionDep, settings: SettingsDep) -> Health:
    """Liveness, database reachability and the workers that heartbeated within a lease; monitoring polls this."""
    workers = 0
    try:
        session.execute(text("SELECT 1"))  # on the session's own connection: one per request, never two
        workers = live_workers(session, settings.build_lease_seconds)
        database = "ok"
    except SQLAlchemyError as error:
        database = f"error: {type(error).__name__}"
    return Health(status="ok" if database == "ok" else "degraded", database=database, workers=workers)
