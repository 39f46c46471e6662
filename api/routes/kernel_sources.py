"""Kernel sources kept from earlier downloads: what a build for a kernel the mirror has dropped builds from."""

from fastapi import APIRouter

from api.deps import DataDirDep
from api.schemas import KeptSourcesOut
from ofedrepo import kept_sources

router = APIRouter(prefix="/api/v1/kernel-sources", tags=["feeds"])


@router.get("", response_model=list[KeptSourcesOut])
def list_kept_sources(data: DataDirDep) -> list[KeptSourcesOut]:
    """The kernels whose `kernel-devel` sources are kept (`OFEDREPO_KERNEL_SOURCES_KEEP`), the most recently used
    first: builds for them need no mirror."""
    return [KeptSourcesOut.of(kept) for kept in kept_sources.list_kept(data)]
