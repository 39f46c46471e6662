"""Kernel feeds: what each one found, when, and what it queued."""

from fastapi import APIRouter

from api.deps import ReadSessionDep, SessionScopedRoute
from api.schemas import FeedOut
from ofedrepo.builds import feeds

router = APIRouter(prefix="/api/v1/feeds", tags=["feeds"], route_class=SessionScopedRoute)


@router.get("", response_model=list[FeedOut])
def list_feeds(session: ReadSessionDep) -> list[FeedOut]:
    """The kernel feeds workers have polled (`OFEDREPO_KERNEL_FEEDS`), with their last result."""
    return [FeedOut.of(feed) for feed in feeds.list_feeds(session)]
