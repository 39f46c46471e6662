"""Bundles: upload or import an MLNX_OFED bundle (stored unpacked, once per sha256); list and show them."""

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.auth import TOKEN_REQUIRED, TOKEN_RESPONSES
from api.deps import BundleStoreDep, DataDirDep, IdPath, ReadSessionDep, SessionScopedRoute, SettingsDep
from api.schemas import BundleOut
from api.uploads import received, upload_request_body
from ofedrepo.builds import feeds
from ofedrepo.bundles import store

router = APIRouter(prefix="/api/v1/bundles", tags=["bundles"], route_class=SessionScopedRoute)


@router.post(
    "",
    status_code=201,
    dependencies=TOKEN_REQUIRED,
    response_model=BundleOut,
    openapi_extra={"requestBody": upload_request_body("An MLNX_OFED bundle (tgz or iso; a directory by path)")},
    responses={
        **TOKEN_RESPONSES,
        200: {"model": BundleOut, "description": "A bundle with the same sha256 is already registered"},
        413: {"description": "The upload is larger than `OFEDREPO_BUNDLE_MAX_UPLOAD_SIZE`"},
        415: {"description": "Neither multipart/form-data nor application/json"},
        422: {"description": "Not an MLNX_OFED bundle, or an unsafe archive (`detail` says what is wrong)"},
    },
)
async def add_bundle(
    request: Request, response: Response, bundles: BundleStoreDep, settings: SettingsDep, data: DataDirDep
) -> BundleOut:
    """Register a bundle; its identity comes from its own files (an MLNX_OFED bundle's `.mlnx`, `distro`,
    `.arch` and `RPMS/`; a DOCA-OFED repository's `doca-host` package or online tree path). A new bundle gets
    its builds for the kernels the kernel feeds already found at once."""
    async with received(
        request,
        data=data,
        limit=settings.bundle_max_upload_size,
        limit_setting="OFEDREPO_BUNDLE_MAX_UPLOAD_SIZE",
        import_dirs=settings.import_dirs,
        take_in=bundles.take_in,
        directories=True,
    ) as candidate:
        bundle, created = await run_in_threadpool(bundles.add, candidate)
    if created:
        await run_in_threadpool(feeds.queue_known_kernels, bundles.sessions, settings, bundle.id)
    response.status_code = 201 if created else 200
    return BundleOut.of(bundle)


@router.get("", response_model=list[BundleOut])
def list_bundles(session: ReadSessionDep) -> list[BundleOut]:
    return [BundleOut.of(bundle) for bundle in store.list_bundles(session)]


@router.get("/{bundle_id}", response_model=BundleOut, responses={404: {"description": "No such bundle"}})
def get_bundle(bundle_id: IdPath, session: ReadSessionDep) -> BundleOut:
    return BundleOut.of(store.get_bundle(session, bundle_id))
