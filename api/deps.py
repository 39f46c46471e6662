"""Dependencies shared by the routes: settings and a database session."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ofedrepo.bundles import BundleStore
from ofedrepo.config import Settings
from ofedrepo.images import ImageCatalog
from ofedrepo.storage import DataDir


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_data_dir(request: Request) -> DataDir:
    data: DataDir = request.app.state.data
    return data


def get_image_catalog(request: Request) -> ImageCatalog:
    catalog: ImageCatalog = request.app.state.images
    return catalog


def get_bundle_store(request: Request) -> BundleStore:
    store: BundleStore = request.app.state.bundles
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
DataDirDep = Annotated[DataDir, Depends(get_data_dir)]
ImageCatalogDep = Annotated[ImageCatalog, Depends(get_image_catalog)]
BundleStoreDep = Annotated[BundleStore, Depends(get_bundle_store)]
