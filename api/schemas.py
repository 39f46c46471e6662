"""JSON shapes of the API (DESIGN.md, "REST API")."""

from datetime import datetime

from pydantic import BaseModel, Field

from ofedrepo.catalog import RepoView
from ofedrepo.models import Build, RepoVersion
from ofedrepo.repofile import RepoLocation


class Health(BaseModel):
    status: str = Field(description="`ok` when the service and its database answer")
    database: str = Field(description="`ok`, or the error talking to the database")
    workers: int = Field(description="Workers that heartbeated recently")


class BuildOut(BaseModel):
    id: int
    state: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, build: Build) -> "BuildOut":
        return cls.model_validate(build, from_attributes=True)


class VersionOut(BaseModel):
    number: int
    url: str = Field(description="This version's directory (a pinned `DIB_MLNX_OFED_REPO`)")
    created_at: datetime
    package_count: int
    size_bytes: int
    gpgcheck: bool
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
    def of(cls, view: RepoView, api_base: str) -> "RepoOut":
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
            build=BuildOut.of(repo.builds[-1]) if repo.builds else None,
        )


class DibSnippet(BaseModel):
    environment: dict[str, str] = Field(description="The `DIB_MLNX_OFED_*` variables")
    shell: str = Field(description="The same as `export` lines")
    tripleo_yaml: str = Field(description="A TripleO `disk_images` fragment adding the `mlnx-ofed` element")
