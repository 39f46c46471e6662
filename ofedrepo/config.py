"""Settings: declared once, with the help text the README shows.

Every entry point (the API's app factory, the worker, the CLI callback) loads one ``Settings`` and passes it
down; nothing else reads the environment. Values come from ``OFEDREPO_*`` environment variables and, when
``OFEDREPO_CONFIG_FILE`` names one, from a TOML file (environment variables win).
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "OFEDREPO_CONFIG_FILE"

GiB = 1024**3

#: Builder images by distro major: the ones `make builder-images` builds from `builders/el*/Containerfile`.
DEFAULT_CONTAINER_IMAGES = {
    "rhel7": "localhost/ofedrepo-builder:el7",
    "rhel8": "localhost/ofedrepo-builder:el8",
    "rhel9": "localhost/ofedrepo-builder:el9",
}


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` as well as a TOML list: environment variables cannot carry lists."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can set. The README's settings table is generated from these descriptions."""

    model_config = SettingsConfigDict(env_prefix="OFEDREPO_", extra="ignore")

    data_dir: Path = Field(
        Path("var"),
        description="Where ofedrepo keeps everything it writes: the published tree (`repos/`), unpacked "
        "bundles, staging, the site signing key and (by default) the SQLite database.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database. Default: SQLite at `<data_dir>/ofedrepo.db`. "
        "Use PostgreSQL (`postgresql+psycopg://user@host/db`) when workers run on several hosts.",
    )
    public_url: AnyHttpUrl = Field(
        AnyHttpUrl("http://127.0.0.1:8000"),
        description="The URL clients reach this service at; written into `.repo` files and DIB snippets, "
        "so set it to the address your image builders and nodes use.",
    )
    host: str = Field("127.0.0.1", description="Address `ofedrepo serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `ofedrepo serve` listens on.")
    http_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's head, and may pause while sending a body; then "
        "the connection is closed (head) or answered 408 (body).",
    )
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer tokens. When set, every mutating API call needs "
        "`Authorization: Bearer <token>`. Empty: no authentication.",
    )
    signing_enabled: bool = Field(
        True,
        description="Sign unsigned packages (add-kernel-support output) with the site key, so that "
        "`gpgcheck=1` works. Turn off only if you sign elsewhere.",
    )
    signing_key_file: Path | None = Field(
        None,
        description="An ASCII-armoured, passphrase-less secret key to use as the site key. Default: a key "
        "generated under `<data_dir>/keys/` on first use.",
    )
    signing_key_uid: str = Field(
        "ofedrepo site key <ofedrepo@localhost>",
        description="User ID of the generated site key.",
    )
    archive_max_bytes: int = Field(
        20 * GiB,
        gt=0,
        description="Largest total size an archive (tgz, iso) may unpack to; larger ones are refused, and so is "
        "one that unpacks to more than 50 times its own size (past 64 MiB): bundles are compressed RPMs.",
    )
    archive_max_members: int = Field(
        20_000,
        gt=0,
        description="Largest number of entries an archive may hold (an MLNX_OFED bundle has a few hundred).",
    )
    import_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated server directories from which `POST /api/v1/images` and "
        '`/api/v1/bundles` may import a file by `{"path": ...}`. Empty: importing by path is disabled.',
    )
    image_max_upload_size: int = Field(
        64 * GiB, gt=0, description="Largest image upload accepted, in bytes; larger ones get 413."
    )
    image_max_virtual_size: int = Field(
        4096 * GiB,
        gt=0,
        description="Largest virtual disk size an image may declare, in bytes; larger ones are refused.",
    )

    bundle_max_upload_size: int = Field(
        20 * GiB, gt=0, description="Largest bundle upload accepted, in bytes; larger ones get 413."
    )
    embedded_worker: bool = Field(
        True, description="`ofedrepo serve` also runs a worker (`--no-worker` or false: builds need `ofedrepo worker`)."
    )
    worker_concurrency: int = Field(1, ge=1, le=64, description="Builds one worker process runs at once.")
    build_runner: Literal["local", "podman", "docker"] = Field(
        "local",
        description="Where `mlnx_add_kernel_support.sh` runs: `podman` or `docker` (production: a container of "
        "the builder image for the bundle's distro, see `OFEDREPO_BUILD_CONTAINER_IMAGES`), or `local`, on the "
        "worker host itself, which must then be a root-run RPM host of the bundle's distro family.",
    )
    build_container_images: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_CONTAINER_IMAGES),
        description="Container image per distro tag, `tag=image` comma-separated; an exact tag (`rhel8.6`) wins "
        "over its major (`rhel8`). The defaults are what `make builder-images` builds from `builders/`.",
    )
    build_local_preflight: bool = Field(
        True,
        description="Before the `local` runner starts a build, check that this host can run NVIDIA's script "
        "(root; an RPM distribution of the bundle's family; not Debian/Ubuntu, where the script would make .deb "
        "packages) and refuse, saying what to do, when it cannot. Turn off only to run a synthetic test bundle's "
        "script on a development host.",
    )
    build_keep_failed_seconds: float = Field(
        86400,
        ge=0,
        description="How long a failed build's scratch directory (the script's work and log directories) is kept "
        "under `<data_dir>/work/` for debugging; retention removes it after that. 0 removes it at once.",
    )
    module_sign_priv_key: Path | None = Field(
        None,
        description="Secure Boot: the private key the runner passes to the script as `MODULE_SIGN_PRIV_KEY`, so "
        "that the kernel packages sign their modules. Set together with `OFEDREPO_MODULE_SIGN_PUB_KEY`.",
    )
    module_sign_pub_key: Path | None = Field(
        None,
        description="Secure Boot: the certificate (public key) passed as `MODULE_SIGN_PUB_KEY`, the one enrolled "
        "(MOK) on the nodes. With both set, every rebuilt module must carry a signature or the build fails.",
    )
    bundle_libraries: Literal["upstream", "mlnx"] = Field(
        "upstream",
        description="Which library set to publish from a 5.0-5.1 bundle that ships two: `upstream` "
        "(`RPMS/UPSTREAM_LIBS`, rdma-core, the installer's default since 5.0) or `mlnx` (`RPMS/MLNX_LIBS`, the "
        "legacy verbs libraries, as `mlnxofedinstall --mlnx-libs`). Other bundles have one set.",
    )
    build_timeout: int = Field(7200, gt=0, description="Seconds one add-kernel-support run may take.")
    build_max_attempts: int = Field(
        3, ge=1, description="Times a build is tried when its worker dies mid-build (lease expiry) before it fails."
    )
    build_lease_seconds: float = Field(
        60,
        gt=0,
        description="A running build's lease; its worker renews it every quarter of this. A build whose "
        "lease expired (worker killed, host lost) goes back to the queue.",
    )
    queue_poll_interval: float = Field(
        0.5, gt=0, le=10, description="Seconds an idle worker waits before looking for queued builds again."
    )
    gc_keep_versions: int | None = Field(
        None,
        ge=1,
        description="Automatic retention: workers keep the newest this many versions of each repo (with "
        "`OFEDREPO_GC_OLDER_THAN`, only older ones go). Unset: versions are removed only by `ofedrepo gc`.",
    )
    gc_older_than: str | None = Field(
        None, description="Automatic retention: remove versions older than this (`30d`, `12h`); see above."
    )
    gc_interval: float = Field(3600, gt=0, description="Seconds between automatic retention runs.")
    gc_grace_seconds: float = Field(
        3600,
        ge=0,
        description="A version that stopped being `latest` less than this long ago is never removed: a client "
        "may still be downloading from it.",
    )
    kernel_sources_root: Path = Field(
        Path("/usr/src/kernels"),
        description="Where kernel sources live, one directory per kernel release (`<root>/<K>/Makefile`).",
    )
    kernel_devel_repos: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated yum repository baseurls searched for `kernel-devel-<K>` when "
        "`<kernel_sources_root>/<K>` is missing; the package is downloaded, checksum-verified and unpacked "
        "into `<data_dir>/kernel-sources/`.",
    )

    kernel_feeds: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated yum repository baseurls where new kernels appear (a distro's BaseOS, its "
        "vault). Workers poll them and queue a build, at a lower priority than people's requests, for each new "
        "`kernel-devel` release and each registered bundle it fits; the package found there is also the "
        "build's kernel source.",
    )
    kernel_feed_interval: float = Field(
        300, gt=0, description="Seconds between two polls of a kernel feed (one worker polls each feed)."
    )
    kernel_feed_keep: int = Field(
        3,
        ge=1,
        le=100,
        description="Kernel feeds: build for the newest this many kernels of each minor release (`el8_6`, "
        "`el8_8`...) a feed holds, not for every kernel in its history.",
    )
    kernel_feed_max_metadata: int = Field(
        512 * 1024**2,
        gt=0,
        description="Bytes a feed's primary metadata may take, compressed as downloaded and again "
        "decompressed; larger metadata is refused.",
    )

    @field_validator("api_tokens", "import_dirs", "kernel_devel_repos", "kernel_feeds", mode="before")
    @classmethod
    def _tokens_from_text(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("build_container_images", mode="before")
    @classmethod
    def _images_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in _split_list(value)]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected tag=image pairs, e.g. rhel8=registry.example/ofed-builder:8")
            return {tag.strip(): image.strip() for tag, image in pairs}
        return value

    @model_validator(mode="after")
    def _signing_keys_together(self) -> "Settings":
        if (self.module_sign_priv_key is None) != (self.module_sign_pub_key is None):
            raise ValueError("set OFEDREPO_MODULE_SIGN_PRIV_KEY and OFEDREPO_MODULE_SIGN_PUB_KEY together, or neither")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def scratch_lifetime(self) -> float:
        """Seconds after which scratch (staging, work, uploads, half-unpacked sources) belongs to no one: no
        build runs longer than its timeout, and the grace covers a publish or upload still finishing."""
        return self.build_timeout + self.gc_grace_seconds

    @property
    def kernel_package_repos(self) -> list[str]:
        """Where ``kernel-devel`` packages are looked for: the configured repositories, then the kernel feeds."""
        return list(dict.fromkeys(self.kernel_devel_repos + self.kernel_feeds))

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ofedrepo.db').absolute()}"

    @property
    def base_url(self) -> str:
        """``public_url`` without a trailing slash, ready to have paths appended."""
        return str(self.public_url).rstrip("/")
