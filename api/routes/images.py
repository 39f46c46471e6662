"""Images: upload or import one, get its inspection; list and show the known ones."""

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.auth import TOKEN_REQUIRED, TOKEN_RESPONSES
from api.deps import DataDirDep, IdPath, ImageCatalogDep, ReadSessionDep, SessionScopedRoute, SettingsDep
from api.schemas import ImageOut
from api.uploads import received, upload_request_body
from ofedrepo.images import catalog

router = APIRouter(prefix="/api/v1/images", tags=["images"], route_class=SessionScopedRoute)


@router.post(
    "",
    status_code=201,
    dependencies=TOKEN_REQUIRED,
    response_model=ImageOut,
    openapi_extra={"requestBody": upload_request_body("A qcow2 or raw disk image")},
    responses={
        **TOKEN_RESPONSES,
        200: {"model": ImageOut, "description": "An image with the same sha256 was already inspected"},
        413: {"description": "The upload is larger than `OFEDREPO_IMAGE_MAX_UPLOAD_SIZE`"},
        415: {"description": "Neither multipart/form-data nor application/json"},
        422: {"description": "Not a usable image: hostile, unsupported, no kernel... (`detail` says why)"},
        503: {"description": "The libguestfs appliance could not start"},
    },
)
async def add_image(
    request: Request, response: Response, images: ImageCatalogDep, settings: SettingsDep, data: DataDirDep
) -> ImageOut:
    """Inspect an image: a multipart `file` upload (streamed to disk, not kept) or `{"path": ...}` on the server.

    The appliance boots only for an unknown sha256; a known image answers at once with 200.
    """
    async with received(
        request,
        data=data,
        limit=settings.image_max_upload_size,
        limit_setting="OFEDREPO_IMAGE_MAX_UPLOAD_SIZE",
        import_dirs=settings.import_dirs,
    ) as candidate:
        outcome = (await run_in_threadpool(images.inspect, [candidate]))[0]
    if outcome.error:
        raise outcome.error
    assert outcome.image is not None
    response.status_code = 201 if outcome.created else 200
    return ImageOut.of(outcome.image)


@router.get("", response_model=list[ImageOut])
def list_images(session: ReadSessionDep) -> list[ImageOut]:
    """Every inspected image, oldest first."""
    return [ImageOut.of(image) for image in catalog.list_images(session)]


@router.get("/{image_id}", response_model=ImageOut, responses={404: {"description": "No such image"}})
def get_image(image_id: IdPath, session: ReadSessionDep) -> ImageOut:
    return ImageOut.of(catalog.get_image(session, image_id))
