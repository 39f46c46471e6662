"""JSON shapes of the API (DESIGN.md, "REST API")."""

from collections.abc import Collection
from datetime import datetime
from typing import Literal

from fastapi import Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from ofedrepo.builds import requests
from ofedrepo.bundles.store import BundleView
from ofedrepo.bundles.vendors import dib_package_list
from ofedrepo.images.catalog import ImageView
from ofedrepo.kept_sources import KeptSources
from ofedrepo.kinds import BundleKind
from ofedrepo.models import MAX_ID, Build, KernelFeed, RepoVersion
from ofedrepo.repos.queries import RepoView
from ofedrepo.repos.repofile import RepoLocation

#: ``?format=env``: the answer as ``NAME='value'`` lines, for clients with a shell and curl but no JSON parser
#: (the DIB element ``ofedrepo-mlnx-ofed`` runs in an image's chroot). Values carry text from outside (a build's
#: error quotes the compiler, which quotes the bundle's sources), so each is single-quoted: a POSIX shell that
#: sources the answer gets every value back exactly and runs nothing. The element parses it without sourcing.
FormatQuery = Query(
    "json",
    alias="format",
    description="`env`: `OFEDREPO_*='value'` lines (text/plain), single-quoted so that a POSIX shell can source "
    "them, for shell clients instead of JSON",
)
AnswerFormat = Literal["json", "env"]
#: The ``text/plain`` alternative of an answer, for a route's ``responses``.
ENV_CONTENT = {"content": {"text/plain": {"example": "OFEDREPO_REPO_ID='1'\nOFEDREPO_BUILD_STATE='running'\n"}}}


def shell_quoted(value: str) -> str:
    """``value`` as one single-quoted POSIX shell word. Inside single quotes nothing is special but the quote
    itself, written ``'\\''`` (close, an escaped quote, reopen); always quoted, even when empty or plain, so that
    a reader needs one rule. NUL is dropped: no shell variable can hold it."""
    return "'" + value.replace("\x00", "").replace("'", "'\\''") + "'"


def env_response(fields: dict[str, str | int | None], status_code: int = 200) -> PlainTextResponse:
    """``NAME='value'`` lines (None is empty); a value keeps its newlines, inside its quotes."""
    lines = [f"{name}={shell_quoted('' if value is None else str(value))}" for name, value in fields.items()]
    return PlainTextResponse("\n".join(lines) + "\n", status_code=status_code)


class Ping(BaseModel):
    status: str = Field("ok", description="Always `ok`: the process answers")


class Health(BaseModel):
    status: str = Field(description="`ok` when the service and its database answer")
    database: str = Field(description="`ok`, or the error talking to the database")
    workers: int = Field(description="Workers that heartbeated recently")
    worker_list: list["WorkerOut"] = Field(description="Those workers, each with the architectures it builds for")


class WorkerOut(BaseModel):
    id: str
    hostname: str
    concurrency: int
    arches: list[str] = Field(description="The architectures it builds for (`OFEDREPO_WORKER_ARCHES`)")
    heartbeat_at: datetime


class BuildOut(BaseModel):
    id: int
    state: str = Field(description="`queued`, `running`, `succeeded`, `failed` or `cancelled`")
    attempts: int = Field(description="Times a worker started it (a worker that died makes another attempt)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    repo_id: int
    bundle_id: int | None
    kernel: str
    image_id: int | None = Field(description="The image the request named, if any")
    rebuild: bool = Field(
        description="False when the bundle already holds the kernel's modules (its GA kernel): its own packages "
        "are published, nothing is compiled"
    )
    version_number: int | None = Field(description="The repo version it published")
    cancel_requested: bool = Field(description="A cancel was asked while it ran; its worker is stopping it")
    worker_id: str | None
    priority: int = Field(description="Claim order: 10 for people's requests, 0 for what kernel feeds queue")
    feed_id: int | None = Field(description="The kernel feed that queued it, when no one asked")
    waiting: str | None = Field(
        None, description="Why a queued build is not taken (no live worker builds for its architecture)"
    )

    @classmethod
    def of(cls, build: Build, live_arches: Collection[str] | None = None) -> "BuildOut":
        """``live_arches`` (``requests.live_arches``), where the answer says why a queued build waits."""
        waiting = None if live_arches is None else requests.waiting_reason(build, live_arches)
        return cls.model_validate(build, from_attributes=True).model_copy(update={"waiting": waiting})

    def env(self) -> dict[str, str | int | None]:
        return {
            "OFEDREPO_BUILD_ID": self.id,
            "OFEDREPO_BUILD_STATE": self.state,
            "OFEDREPO_REPO_ID": self.repo_id,
            "OFEDREPO_KERNEL": self.kernel,
            "OFEDREPO_VERSION": self.version_number,
            "OFEDREPO_ERROR": self.error,
            "OFEDREPO_BUILD_WAITING": self.waiting,
        }


class VersionOut(BaseModel):
    number: int
    url: str = Field(description="This version's directory (a pinned `DIB_MLNX_OFED_REPO`)")
    created_at: datetime
    package_count: int
    size_bytes: int
    gpgcheck: bool
    repo_gpgcheck: bool = Field(description="`RPMS/repodata/repomd.xml.asc` signs the metadata (site key)")
    packages: list[str] | None = Field(description="Names of the packages it holds (None for older versions)")
    build_id: int | None

    @classmethod
    def of(cls, version: RepoVersion, location: RepoLocation) -> "VersionOut":
        pinned = RepoLocation(location.base_url, location.bundle_name, location.kernel, str(version.number))
        return cls(
            number=version.number,
            url=pinned.url,
            created_at=version.created_at,
            package_count=version.package_count,
            size_bytes=version.size_bytes,
            gpgcheck=version.gpgcheck,
            repo_gpgcheck=version.repo_gpgcheck,
            packages=version.package_names,
            build_id=version.build_id,
        )


class RepoOut(BaseModel):
    id: int
    bundle: str = Field(description="Bundle name, without `-ext`")
    kernel: str
    ofed_version: str
    distro: str
    arch: str
    state: str = Field(description="`published` once a version exists, else the latest build's state")
    versions: list[VersionOut]
    latest_version: int | None
    latest_url: str = Field(description="The `DIB_MLNX_OFED_REPO` value: the directory holding `RPMS/`")
    baseurl: str = Field(description="`latest_url` + `/RPMS`: the yum baseurl")
    repofile_url: str
    build: BuildOut | None = Field(description="The latest build of this repo")

    @classmethod
    def of(cls, view: RepoView, api_base: str, live_arches: Collection[str] | None = None) -> "RepoOut":
        repo = view.repo
        return cls(
            id=repo.id,
            bundle=repo.bundle_name,
            kernel=repo.kernel,
            ofed_version=repo.ofed_version,
            distro=repo.distro,
            arch=repo.arch,
            state=view.state,
            versions=[VersionOut.of(version, view.latest) for version in repo.versions],
            latest_version=repo.versions[-1].number if repo.versions else None,
            latest_url=view.latest.url,
            baseurl=view.latest.baseurl,
            repofile_url=f"{api_base}/api/v1/repos/{repo.id}/repofile",
            build=BuildOut.of(repo.builds[-1], live_arches) if repo.builds else None,
        )

    def env(self) -> dict[str, str | int | None]:
        latest = self.versions[-1] if self.versions else None
        return {
            "OFEDREPO_REPO_ID": self.id,
            "OFEDREPO_REPO_STATE": self.state,
            "OFEDREPO_KERNEL": self.kernel,
            "OFEDREPO_VERSION": self.latest_version,
            "OFEDREPO_PKGLIST": dib_package_list(self.bundle, latest.packages) if latest else None,
            "OFEDREPO_BUILD_ID": self.build.id if self.build else None,
            "OFEDREPO_BUILD_STATE": self.build.state if self.build else None,
            "OFEDREPO_BUILD_WAITING": self.build.waiting if self.build else None,
        }


class FeedOut(BaseModel):
    id: int
    url: str = Field(description="The yum repository's baseurl (`OFEDREPO_KERNEL_FEEDS`)")
    polled_at: datetime | None = Field(description="The last poll that reached it (unchanged metadata included)")
    changed_at: datetime | None = Field(description="The last poll that found new metadata")
    next_poll_at: datetime | None
    error: str | None = Field(description="Why the last poll failed; null after a good one")
    kernels: list[str] = Field(description="The kernels the last good poll found, within the per-minor bound")
    builds_queued: int = Field(description="Builds it has queued, in all")

    @classmethod
    def of(cls, feed: KernelFeed) -> "FeedOut":
        return cls.model_validate(feed, from_attributes=True)


class KeptSourcesOut(BaseModel):
    kernel: str
    package: str = Field(description="The `kernel-devel` (`kernel-rt-devel`...) package they were unpacked from")
    url: str = Field(description="Where it was downloaded from")
    size: int = Field(description="Bytes of the unpacked tree")
    kept_at: datetime
    last_used: datetime = Field(description="When a build last used them (retention keeps the most recent)")

    @classmethod
    def of(cls, kept: KeptSources) -> "KeptSourcesOut":
        return cls.model_validate(kept, from_attributes=True)


class DibSnippet(BaseModel):
    environment: dict[str, str] = Field(description="The `DIB_MLNX_OFED_*` variables")
    shell: str = Field(description="The same as `export` lines")
    tripleo_yaml: str = Field(description="A TripleO `disk_images` fragment adding the `mlnx-ofed` element")


class ImageOut(BaseModel):
    id: int
    sha256: str
    filename: str = Field(description="The name the image was uploaded or imported under")
    distro: str = Field(description="os-release `ID`: `rocky`, `centos`, `rhel`...")
    os_version: str = Field(description="`major.minor`, e.g. `8.6`")
    arch: str
    kernels: list[str] = Field(description="Installed kernels, oldest first (rpm version order)")
    default_kernel: str = Field(description="The kernel the image boots")
    default_kernel_rule: str = Field(description="Which boot loader rule decided `default_kernel`")
    ofed_distro: str | None = Field(description="The MLNX_OFED distro tag of bundles that fit, e.g. `rhel8.6`")
    created_at: datetime

    @classmethod
    def of(cls, image: ImageView) -> "ImageOut":
        return cls.model_validate(image, from_attributes=True)


class BundleOut(BaseModel):
    id: int
    name: str = Field(
        description="`MLNX_OFED_LINUX-<version>-<distro>-<arch>`, or `DOCA_HOST-<doca>-<ofed>-<distro>-<arch>`"
    )
    kind: BundleKind = Field(description="`mlnx_ofed` (MLNX_OFED bundle) or `doca` (DOCA-OFED repository)")
    doca_version: str | None = Field(description="The DOCA release of a DOCA-OFED repository")
    ofed_version: str
    distro: str
    arch: str
    sha256: str = Field(description="Of the archive, or of the tree for a directory")
    supported_kernels: list[str] = Field(
        description="Kernels it already holds modules for (its GA kernel): requests for them need no rebuild"
    )
    created_at: datetime
    identified_by: str | None = Field(
        description="For a DOCA-OFED repository, what told its DOCA version and distro: the `doca-host` package, "
        "or the online tree's `doca/<version>/<distro>/<arch>` path"
    )

    @classmethod
    def of(cls, bundle: BundleView) -> "BundleOut":
        return cls.model_validate(bundle, from_attributes=True)


class PathImport(BaseModel):
    path: str = Field(description="A file (or, for bundles, a directory) under one of `OFEDREPO_IMPORT_DIRS`")


class RepoRequestIn(BaseModel):
    kernel: str | None = Field(None, description="A kernel release (`uname -r` form)", max_length=128)
    image_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="An inspected image: its default kernel and distro are used"
    )
    ofed_version: str | None = Field(
        None, description="Pick this OFED version (default: the newest that fits)", max_length=64
    )
    distro: str | None = Field(
        None, description="MLNX_OFED distro tag, e.g. `rhel8.6` (default: from the image or kernel)", max_length=32
    )
    arch: str | None = Field(None, description="Default: from the kernel release", max_length=16)
    bundle_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="Use this bundle (when several have the same name and version)"
    )
    kind: BundleKind | None = Field(
        None, description="Only bundles of this kind: `mlnx_ofed` or `doca` (default: the newest driver of either)"
    )
    force: bool = Field(False, description="Build again even if a build for this cache key succeeded")
