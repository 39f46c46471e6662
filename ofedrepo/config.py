"""Settings: declared once, with the help text the README shows.

Every entry point (the API's app factory, the worker, the CLI callback) loads one ``Settings`` and passes it
down; nothing else reads the environment. Values come from ``OFEDREPO_*`` environment variables and, when
``OFEDREPO_CONFIG_FILE`` names one, from a TOML file (environment variables win).
"""

import os
import platform
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "OFEDREPO_CONFIG_FILE"

GiB = 1024**3
#: What an architecture's name may be (rpm's and uname's: x86_64, aarch64, ppc64le).
#: What a bearer token may be made of: visible ASCII (RFC 6750 allows fewer; a wider set refuses nothing real).
_TOKEN = re.compile(r"[!-~]+")
_ARCH = re.compile(r"[a-z0-9_]{1,16}")

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


def host_ports(text: str) -> frozenset[tuple[str, int | None]]:
    """``host`` and ``host:port`` entries, comma-separated (``OFEDREPO_MIRROR_REDIRECT_HOSTS``), as (host,
    port) pairs; a port of None means the scheme's default port. ``ValueError`` for an entry that is neither."""
    hosts = set()
    for entry in (item.strip() for item in text.split(",")):
        if not entry:
            continue
        parts = urllib.parse.urlsplit("//" + entry)
        try:
            port = parts.port
        except ValueError:  # a port that is no number
            raise ValueError(f"{entry[:200]!r} is not a host or host:port") from None
        if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username:
            raise ValueError(f"{entry[:200]!r} is not a host or host:port")
        hosts.add((parts.hostname, port))
    return frozenset(hosts)


class MirrorSource(BaseModel):
    """A distro yum repository ofedrepo downloads packages from, and how their signatures are checked: against
    ``gpgkeys`` (armoured public key files, as dnf's ``gpgkey``), or not at all where the operator said
    ``gpgcheck=0`` for this repository."""

    model_config = ConfigDict(frozen=True)

    url: str
    gpgkeys: tuple[Path, ...] = ()
    gpgcheck: bool = True

    @classmethod
    def parse(cls, text: str) -> "MirrorSource":
        """``<baseurl> [gpgkey=<file>]... [gpgcheck=0|1]``: a setting's entry, as a ``.repo`` file would say it."""
        url, *options = text.split()
        keys, check = [], True
        for option in options:
            name, _, value = option.partition("=")
            if name == "gpgkey" and value:
                keys.append(Path(value.removeprefix("file://")))
            elif name == "gpgcheck" and value in ("0", "1"):
                check = value == "1"
            else:
                raise ValueError(f"{url[:200]}: {option[:100]!r} is not gpgkey=<file> or gpgcheck=0|1")
        return cls(url=url, gpgkeys=tuple(keys), gpgcheck=check)

    @model_validator(mode="after")
    def _keys_unless_unchecked(self) -> "MirrorSource":
        if self.gpgcheck and not self.gpgkeys:
            raise ValueError(
                f"{self.url[:200]}: name the distro's key (`{self.url[:60]} gpgkey=/etc/pki/rpm-gpg/<key>`), or say "
                "`gpgcheck=0` to take its packages unsigned"
            )
        if any(not key.is_absolute() for key in self.gpgkeys):
            raise ValueError(f"{self.url[:200]}: a gpgkey is a file's absolute path")
        return self

    def __str__(self) -> str:
        return self.url


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
    public_url: AnyHttpUrl | None = Field(
        None,
        description="The URL clients reach this service at; written into `.repo` files and DIB snippets, "
        "so set it to the address your image builders and nodes use. Default: `http://<host>:<port>` of "
        "`OFEDREPO_HOST`/`OFEDREPO_PORT` (`127.0.0.1` for a wildcard host).",
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
    http_min_body_rate: int = Field(
        10 * 1024,
        ge=1,
        description="Bytes a second a request body (an upload) must average once its first `OFEDREPO_HTTP_TIMEOUT` "
        "seconds are past; a slower one is answered 408 (a trickle would hold a connection for ever).",
    )
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validate_default=False,  # unset is "no authentication"; only a value that was given is checked
        description="Comma-separated bearer tokens. When set, every mutating API call needs "
        '`Authorization: Bearer <token>`. Unset: no authentication. Set but blank (`""`, `,`, an empty '
        "list, a blank token) stops the service: it never turns authentication off. Tokens are printable "
        "ASCII.",
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
    log_format: Literal["text", "json"] = Field(
        "text",
        description="The service's log on standard error: `text` lines, or `json`, one object per line (`time`, "
        "`level`, `logger`, `message`) for a log collector. `serve` and `worker` log builds queued, started, "
        "succeeded and failed (with the reason), versions published and feed polls.",
    )
    embedded_worker: bool = Field(
        True, description="`ofedrepo serve` also runs a worker (`--no-worker` or false: builds need `ofedrepo worker`)."
    )
    worker_concurrency: int = Field(1, ge=1, le=64, description="Builds one worker process runs at once.")
    worker_arches: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [platform.machine()],
        min_length=1,
        description="Comma-separated architectures this host's workers build for (`x86_64`, `aarch64`); default: "
        "the machine's own. A worker claims only builds of bundles of these architectures (modules built for "
        "another one would not load); a build no live worker declares waits, saying so.",
    )
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
    build_keep_failed_max_bytes: int = Field(
        10 * GiB,
        ge=0,
        description="Total size the kept scratch of failed builds may take: a failed build's scratch larger than "
        "this is not kept, and the oldest kept ones go first to make room for a new one.",
    )
    build_sandbox_uid: int = Field(
        2_000_000_000,
        ge=1,
        le=4_294_967_293,
        description="The host uid and gid a root-run worker runs the vendor's script as: root inside its user "
        "namespace (its own root check passes), this unprivileged id outside, with no capabilities. Bundles are "
        "handed to it before a build (the script copies them as root). Podman maps 65536 ids from it. Pick an id "
        "no account uses; a worker that is not root runs the script as itself.",
    )
    build_max_processes: int = Field(
        1024, ge=16, description="Processes (threads) one run of the vendor's script may have at once."
    )
    build_max_memory: int = Field(
        8 * GiB,
        ge=256 * 1024**2,
        description="Bytes of memory one run of the vendor's script may use: for the whole run where the worker "
        "can make a cgroup (root), and as each process's address space in any case.",
    )
    build_max_scratch_bytes: int = Field(
        30 * GiB,
        ge=64 * 1024**2,
        description="Bytes one build's scratch directory (the script's copy of the bundle, its build trees and "
        "output) may hold; past it the script is stopped and the build fails. Also the largest file it may write.",
    )
    build_scratch_filesystem: bool = Field(
        True,
        description="Whether a root-run worker gives each build's scratch an ext4 filesystem of "
        "`OFEDREPO_BUILD_MAX_SCRATCH_BYTES` (a sparse file beside it, loop-mounted `nosuid,nodev`), so that the "
        "cap is a hard limit that no burst of writes overshoots (the filesystem is no larger than nine tenths of "
        "the disk's free space); a failed build's kept scratch is then that image. "
        "Off, or where the worker is not root or the host has no loop devices, the scratch is measured as it grows.",
    )
    build_log_max_bytes: int = Field(
        100 * 1024**2,
        ge=64 * 1024,
        description="Bytes of the tool's output and logs one build log takes; past it the log says it was cut, "
        "and only ofedrepo's own lines follow (a failed build's scratch keeps the script's logs).",
    )
    build_log_keep_seconds: float = Field(
        90 * 86400,
        gt=0,
        description="Logs of builds that ended longer ago than this are removed by retention (the workers' "
        "hourly run and `ofedrepo gc`); the build's record stays.",
    )
    module_sign_priv_key: Path | None = Field(
        None,
        description="Secure Boot: the private key the runner passes to the script as `MODULE_SIGN_PRIV_KEY`, so "
        "that the kernel packages sign their modules. Set together with `OFEDREPO_MODULE_SIGN_PUB_KEY`.",
    )
    module_sign_pub_key: Path | None = Field(
        None,
        description="Secure Boot: the certificate (public key) passed as `MODULE_SIGN_PUB_KEY`, the one enrolled "
        "(MOK) on the nodes. With both set, every rebuilt module must carry a signature that verifies against it, "
        "or the build fails.",
    )
    bundle_libraries: Literal["upstream", "mlnx"] = Field(
        "upstream",
        description="Which library set to publish from a 5.0-5.1 bundle that ships two: `upstream` "
        "(`RPMS/UPSTREAM_LIBS`, rdma-core, the installer's default since 5.0) or `mlnx` (`RPMS/MLNX_LIBS`, the "
        "legacy verbs libraries, as `mlnxofedinstall --mlnx-libs`). Other bundles have one set.",
    )
    build_timeout: int = Field(
        7200,
        gt=0,
        description="Seconds one build may take, from its claim to its published version (the vendor's tool gets "
        "what is left); past it the build is stopped, its process killed if it does not stop, and it fails.",
    )
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
    kernel_sources_keep: int = Field(
        30,
        ge=1,
        description="Kernels whose downloaded `kernel-devel` sources stay in `<data_dir>/kernel-sources/`, the most "
        "recently used first; retention removes the others (never while a build uses them). A build for a kernel "
        "the mirror has since dropped (Rocky 9 keeps the newest kernel of a minor release only) builds from them. "
        "`GET /api/v1/kernel-sources` lists them.",
    )
    kernel_devel_repos: Annotated[list[MirrorSource], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated yum repositories searched for `kernel-devel-<K>` when "
        "`<kernel_sources_root>/<K>` is missing, each `<baseurl> gpgkey=<file>` (as dnf's `gpgkey`: the distro's "
        "key, e.g. `/etc/pki/rpm-gpg/RPM-GPG-KEY-Rocky-9`; several `gpgkey=` allowed) or `<baseurl> gpgcheck=0` "
        "(no signature check for that repository). The package is downloaded, checksum-verified against the "
        "metadata, its signature verified against the key, and unpacked into `<data_dir>/kernel-sources/`.",
    )

    kernel_feeds: Annotated[list[MirrorSource], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated yum repositories where new `kernel-devel` packages appear (EL8: BaseOS; "
        "EL9: AppStream; the RT repository for `kernel-rt-devel`; the vault for older minor releases), each with "
        "its `gpgkey=<file>` or `gpgcheck=0` as in `OFEDREPO_KERNEL_DEVEL_REPOS`. Workers poll them and queue a "
        "build, at a lower priority than people's requests, for each new `kernel-devel` (`kernel-rt-devel`, "
        "`kernel-64k-devel`, `kernel-uek-devel`, `kernel-uek64k-devel`) release and each registered bundle it "
        "fits; the package found there is also the build's kernel source.",
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
    kernel_feed_poll_timeout: float = Field(
        180,
        gt=0,
        description="Seconds one poll of a kernel feed may take in all (repomd.xml, the primary metadata, "
        "parsing it), however slowly the mirror answers; past it the poll is refused as too slow and the next "
        "feed is polled.",
    )
    mirror_redirect_hosts: str = Field(
        "",
        description="Comma-separated hosts (`host`, or `host:port`; `host` alone means the default port) that a "
        "kernel feed's mirror may redirect to over http or https (never from https to http). Without them a "
        "redirect is followed only to the mirror's own scheme, host and port, in every read of a distro mirror.",
    )

    @field_validator("import_dirs", mode="before")
    @classmethod
    def _tokens_from_text(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator(
        "data_dir", "signing_key_file", "import_dirs", "module_sign_priv_key", "module_sign_pub_key",
        "kernel_sources_root",
    )  # fmt: skip
    @classmethod
    def _absolute(cls, value: Path | list[Path] | None) -> Path | list[Path] | None:
        """Every path setting is absolute once loaded, whatever directory each tool then runs in: bubblewrap
        resolves a relative mount source against its own working directory, rpm's ``--dbpath`` must begin with
        ``/`` (the default data dir, ``var``, broke both)."""
        if isinstance(value, list):
            return [Path(os.path.abspath(item)) for item in value]
        return None if value is None else Path(os.path.abspath(value))

    @field_validator("worker_arches", mode="before")
    @classmethod
    def _arches_from_text(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("worker_arches")
    @classmethod
    def _arch_names(cls, value: list[str]) -> list[str]:
        for arch in value:
            if not _ARCH.fullmatch(arch):
                raise ValueError(f"{arch[:40]!r} is not an architecture's name (x86_64, aarch64, ppc64le...)")
        return list(dict.fromkeys(value))

    @field_validator("kernel_devel_repos", "kernel_feeds", mode="before")
    @classmethod
    def _mirrors_from_text(cls, value: Any) -> Any:
        items = _split_list(value)
        if not isinstance(items, list):
            return items
        return [MirrorSource.parse(item) if isinstance(item, str) else item for item in items]

    @field_validator("mirror_redirect_hosts")
    @classmethod
    def _redirect_hosts_readable(cls, value: str) -> str:
        host_ports(value)
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _api_tokens_given(cls, value: Any) -> Any:
        """Tokens, refusing a value that names none or holds a blank one. A variable set to ``""`` or ``,`` is a
        mistake (a template that expanded to nothing), and reading it as "no tokens" would silently switch
        authentication off; only an unset variable means that (its default never reaches this validator)."""
        if isinstance(value, str) and value.strip().startswith(("[", "{")):
            # JSON, as pydantic reads lists elsewhere: never a token made of brackets ("[]" was one)
            raise ValueError("takes comma-separated tokens, not JSON")
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            return value  # not a list of strings: pydantic's own type error says so
        tokens = [item.strip() if isinstance(item, str) else item for item in items]
        if not any(tokens):
            raise ValueError(
                "set but names no token; give comma-separated tokens, or unset it to run without authentication"
            )
        if "" in tokens:
            raise ValueError("holds a blank token (an empty item between commas); remove it")
        if not all(isinstance(token, str) and _TOKEN.fullmatch(token) for token in tokens):
            raise ValueError(
                "holds a token with a character clients cannot send in a header, or one no one can see in a file "
                "(a space, a zero-width or control character): tokens are printable ASCII"
            )
        return tokens

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
    def redirect_hosts(self) -> frozenset[tuple[str, int | None]]:
        """``mirror_redirect_hosts`` as (host, port) pairs (see ``host_ports``)."""
        return host_ports(self.mirror_redirect_hosts)

    @property
    def kernel_package_repos(self) -> list["MirrorSource"]:
        """Where ``kernel-devel`` packages are looked for: the configured repositories, then the kernel feeds
        (a URL named twice is searched once, with its first entry's keys)."""
        by_url: dict[str, MirrorSource] = {}
        for source in self.kernel_devel_repos + self.kernel_feeds:
            by_url.setdefault(source.url, source)
        return list(by_url.values())

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ofedrepo.db').absolute()}"

    @property
    def base_url(self) -> str:
        """``public_url`` without a trailing slash, ready to have paths appended; by default where ``serve``
        listens (a port changed alone must not leave every URL pointing at the old one)."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
