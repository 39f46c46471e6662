from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from api.deps import SessionDep
from api.schemas import Health
from ofedrepo.db import check_connection

router = APIRouter(prefix="/api/v1", tags=["health"])


@router.get("/health", response_model=Health)
def health(session: SessionDep) -> Health:
    """Liveness and database reachability; monitoring polls this."""
    try:
        check_connection(session.get_bind())  # type: ignore[arg-type]
        database = "ok"
    except SQLAlchemyError as error:
        database = f"error: {type(error).__name__}"
    return Health(status="ok" if database == "ok" else "degraded", database=database, workers=0)
