"""The image catalogue: images known by sha256, inspected once, several per appliance launch.

An image file is read in full exactly once, to hash it (while it is being received, for uploads); a
sha256 already in the database answers at once. Unknown images are probed (``imagefile``), then all of
them are inspected in one appliance launch (``appliance``) and interpreted (``inspection``). Only the
inspection is kept: image files are multi-gigabyte inputs, and nothing later needs their bytes.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.config import Settings
from ofedrepo.errors import InvalidInput, NotFound
from ofedrepo.images.facts import Inspection, interpret
from ofedrepo.images.probe import ProbedImage, probe
from ofedrepo.metrics import INSPECTION_SECONDS
from ofedrepo.models import Image
from ofedrepo.storage import DataDir
from ofedrepo.uploads import Candidate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageView(Inspection):
    """An inspected image as the API and ``ofedrepo inspect --json`` show it: the inspection and its identity."""

    id: int
    sha256: str
    filename: str
    created_at: datetime

    @classmethod
    def of(cls, image: Image) -> "ImageView":
        values = {name: getattr(image, name) for name in cls.__dataclass_fields__}
        return cls(**{**values, "kernels": list(image.kernels)})

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class Outcome:
    """One image's result: the image (``created`` when this call inspected it) or why it was refused."""

    candidate: Candidate
    image: ImageView | None = None
    created: bool = False
    error: InvalidInput | None = None


class ImageCatalog:
    """Finds, inspects and records images; one per process entry point (CLI, app)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.data = DataDir(settings.data_dir).ensure()

    def known(self, sha256: str) -> ImageView | None:
        with self.sessions() as session:
            image = session.scalars(select(Image).where(Image.sha256 == sha256)).one_or_none()
            return ImageView.of(image) if image else None

    def inspect(self, candidates: Sequence[Candidate], booting: Callable[[int], None] | None = None) -> list[Outcome]:
        """Outcomes in the order given; unknown images are inspected in one launch (``booting`` is told)."""
        from ofedrepo.images.appliance import inspect_images  # libguestfs loads only when an image must be read

        outcomes: dict[int, Outcome] = {}
        pending: dict[str, list[int]] = {}
        probed: list[ProbedImage] = []
        for index, candidate in enumerate(candidates):
            known = self.known(candidate.sha256)
            if known:
                outcomes[index] = Outcome(candidate, image=known)
            elif candidate.sha256 in pending:
                pending[candidate.sha256].append(index)
            else:
                try:
                    probed.append(
                        probe(candidate.path, self.data.home, self.settings.image_max_virtual_size, candidate.name)
                    )
                except InvalidInput as error:
                    outcomes[index] = Outcome(candidate, error=error)
                    continue
                pending[candidate.sha256] = [index]
        if probed:
            if booting:
                booting(len(probed))
            first_indexes = [indexes[0] for indexes in pending.values()]
            names = [candidates[index].name for index in first_indexes]
            scratch = self.data.new_scratch(self.data.work, "inspect")
            scratch.mkdir()
            try:
                with INSPECTION_SECONDS.time():
                    results = inspect_images(probed, names, scratch, self.data.home)
            finally:
                scratch.rmdir()
            for first, result in zip(first_indexes, results, strict=True):
                candidate = candidates[first]
                outcome = self._conclude(candidate, result)
                for index in pending[candidate.sha256]:
                    outcomes[index] = Outcome(candidates[index], outcome.image, outcome.created, outcome.error)
        return [outcomes[index] for index in range(len(candidates))]

    def _conclude(self, candidate: Candidate, facts_or_error: Any) -> Outcome:
        if isinstance(facts_or_error, InvalidInput):
            return Outcome(candidate, error=facts_or_error)
        try:
            inspection = interpret(facts_or_error)
        except InvalidInput as error:
            return Outcome(candidate, error=InvalidInput(f"{candidate.name}: {error}"))
        image, created = self._record(candidate, inspection)
        return Outcome(candidate, image=image, created=created)

    def _record(self, candidate: Candidate, inspection: Inspection) -> tuple[ImageView, bool]:
        with self.sessions() as session:
            fields = {**inspection.as_dict(), "default_kernel_rule": inspection.default_kernel_rule[:200]}
            row = Image(sha256=candidate.sha256, filename=candidate.name, **fields)
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                # Another process inspected the same image meanwhile: its row stands.
                session.rollback()
                known = self.known(candidate.sha256)
                assert known is not None
                return known, False
            log.info(
                "inspected %s: %s %s, default kernel %s", candidate.name, row.distro, row.os_version, row.default_kernel
            )
            return ImageView.of(row), True


def list_images(session: Session) -> list[ImageView]:
    return [ImageView.of(image) for image in session.scalars(select(Image).order_by(Image.id))]


def get_image(session: Session, image_id: int) -> ImageView:
    image = session.get(Image, image_id)
    if image is None:
        raise NotFound(f"no image with id {image_id}")
    return ImageView.of(image)
