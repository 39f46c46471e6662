"""Shared fixtures: the synthetic bundle (built once per session), databases, a running server."""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.bundles.archive import Limits, extract
from ofedrepo.config import Settings
from ofedrepo.db import make_engine, session_factory, upgrade
from ofedrepo.repos.publish import Publisher
from ofedrepo.repos.signing import stop_agents_under
from synthetic import images as disk_image_specs
from synthetic.bundle import (
    CURRENT,
    LEGACY,
    SPLIT,
    BundleSpec,
    TestKey,
    add_kernel_support,
    make_bundle,
    make_kernel_sources,
    make_test_key,
    make_tgz,
)
from synthetic.images import build_images

POSTGRES_URL = os.environ.get("OFEDREPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_KERNEL = "4.18.0-372.26.1.el8_6.x86_64"
OTHER_KERNEL = "4.18.0-372.32.1.el8_6.x86_64"
VENV_BIN = Path(sys.executable).parent
#: The synthetic bundles' script runs on this Debian host, where ofedrepo's local-runner preflight would
#: (rightly) refuse NVIDIA's: every service the tests start says so, deliberately.
SYNTHETIC_BUILD_HOST = {"OFEDREPO_BUILD_LOCAL_PREFLIGHT": "false"}


@pytest.fixture(scope="session", autouse=True)
def no_gpg_agent_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every keyring the session made (the vendor's, the services' site keys, dnf's) had an agent started for it:
    stopped at the end, not left running by the dozen."""
    yield
    stop_agents_under(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session", autouse=True)
def no_scratch_filesystem_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests kill services mid-build, as a lost host does; the scratch filesystems their builds had stay mounted
    until a worker's orphan sweep comes round, which a test's service does not live to see: detached at the end
    (each holds a loop device of this host)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(base + "/"):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


@pytest.fixture(scope="session")
def test_key(tmp_path_factory: pytest.TempPathFactory) -> TestKey:
    return make_test_key(tmp_path_factory.mktemp("vendor-key") / "gnupg")


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, test_key: TestKey) -> Path:
    """The vendor's current-generation bundle (5.8, rhel8.6): signed packages, stale repodata, the script."""
    return make_bundle(CURRENT, test_key, tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def generation_bundles(
    tmp_path_factory: pytest.TempPathFactory, test_key: TestKey, bundle_dir: Path
) -> dict[str, tuple[BundleSpec, Path]]:
    """Each modelled generation's stock bundle: current (5.8), legacy4 (4.9) and split5 (5.0)."""
    made = {CURRENT.generation: (CURRENT, bundle_dir)}
    for spec in (LEGACY, SPLIT):
        made[spec.generation] = (spec, make_bundle(spec, test_key, tmp_path_factory.mktemp(spec.generation)))
    return made


@pytest.fixture(scope="session")
def bundle_tgz(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Path:
    """The bundle as NVIDIA ships it for download: a ``.tgz`` of its directory."""
    return make_tgz(bundle_dir, tmp_path_factory.mktemp("bundle-tgz") / f"{bundle_dir.name}.tgz")


@pytest.fixture(scope="session")
def kernel_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kernels")
    for kernel in (TARGET_KERNEL, OTHER_KERNEL):
        make_kernel_sources(root, kernel)
    return root


@pytest.fixture(scope="session")
def ext_tgz(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, kernel_sources: Path) -> Path:
    """add-kernel-support output for TARGET_KERNEL, made by the bundle's own script."""
    return add_kernel_support(bundle_dir, TARGET_KERNEL, kernel_sources / TARGET_KERNEL, tmp_path_factory.mktemp("ext"))


@pytest.fixture(scope="session")
def rebuilt_ext_tgz(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, kernel_sources: Path) -> Path:
    """A second add-kernel-support run for the same kernel: same packages, new bytes."""
    time.sleep(1.1)  # rpm build times have one-second resolution
    return add_kernel_support(
        bundle_dir, TARGET_KERNEL, kernel_sources / TARGET_KERNEL, tmp_path_factory.mktemp("ext2")
    )


@pytest.fixture(scope="session")
def unpacked_ext(tmp_path_factory: pytest.TempPathFactory, ext_tgz: Path) -> Path:
    root = tmp_path_factory.mktemp("unpacked-ext") / "out"
    extract(ext_tgz, root, Limits(max_bytes=10**9, max_members=10_000))
    return next(root.iterdir())


def variant(unpacked_ext: Path, parent: Path, index: int) -> Path:
    """A copy of the -ext bundle without its index-th userland package: same kernel, other content."""
    copy = parent / f"variant-{index}" / unpacked_ext.name
    shutil.copytree(unpacked_ext, copy)
    userland = sorted(path for path in (copy / "RPMS").glob("*.rpm") if "kver" not in path.name)
    userland[index].unlink()
    return copy


@pytest.fixture(scope="session")
def disk_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The inspection test images (synthetic/images.py) and the demo's, built in one appliance launch.

    ``OFEDREPO_TEST_IMAGE_CACHE`` names a directory that keeps them between sessions (keyed by content).
    """
    cache = os.environ.get("OFEDREPO_TEST_IMAGE_CACHE")
    specs = [*disk_image_specs.ALL, disk_image_specs.DEMO]
    return build_images(specs, Path(cache) if cache else tmp_path_factory.mktemp("disk-images"))


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL at {POSTGRES_URL} does not answer ({error.__class__.__name__}): skipping"


def _admin_url() -> str:
    return POSTGRES_URL.replace("+psycopg", "")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in the test's directory, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ofedrepo.db'}"
        return
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    name = f"ofedrepo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_url(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(_admin_url(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def make_settings(data_dir: Path, database_url: str, public_url: str = "http://127.0.0.1:8000") -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, public_url=public_url)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "var", database_url)


@pytest.fixture
def publisher(settings: Settings, sessions: sessionmaker[Session]) -> Publisher:
    return Publisher(settings, sessions)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    settings: Settings
    process: subprocess.Popen[bytes]
    environment: dict[str, str]


def service_environment(data_dir: Path, url: str, extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of an ofedrepo process under test: its data dir, its URL, SQLite unless told otherwise."""
    environment = {**os.environ, "OFEDREPO_DATA_DIR": str(data_dir), "OFEDREPO_PUBLIC_URL": url}
    environment.update(SYNTHETIC_BUILD_HOST)
    environment.pop("OFEDREPO_DATABASE_URL", None)
    environment.update(extra or {})
    return environment


def start_server(
    data_dir: Path,
    log: Path,
    extra_environment: dict[str, str] | None = None,
    worker: bool = False,
    arguments: tuple[str, ...] = (),
) -> RunningServer:
    """`ofedrepo serve` as a user runs it (with ``arguments``), on a free loopback port; returns once
    /api/v1/health answers.

    ``worker`` keeps its embedded worker; tests that do not build leave it out.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = service_environment(data_dir, url, extra_environment)
    argv = [str(VENV_BIN / "ofedrepo"), "serve", "--port", str(port), "--worker" if worker else "--no-worker"]
    argv += arguments
    with log.open("wb") as output:
        process = subprocess.Popen(argv, env=environment, stdout=output, stderr=output)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                database_url = environment.get("OFEDREPO_DATABASE_URL", f"sqlite:///{data_dir / 'ofedrepo.db'}")
                return RunningServer(url, make_settings(data_dir, database_url, url), process, environment)
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"ofedrepo serve did not start:\n{log.read_text()}")


def start_worker(
    server: RunningServer, log: Path, concurrency: int = 1, environment: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`ofedrepo worker` sharing ``server``'s database and data dir, as on a second host (whose own settings
    ``environment`` adds)."""
    argv = [str(VENV_BIN / "ofedrepo"), "worker", "--concurrency", str(concurrency)]
    with log.open("ab") as output:
        return subprocess.Popen(argv, env={**server.environment, **(environment or {})}, stdout=output, stderr=output)


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def published_server(
    tmp_path_factory: pytest.TempPathFactory, ext_tgz: Path, rebuilt_ext_tgz: Path
) -> Iterator[RunningServer]:
    """A running server whose tree holds versions 1 (ext_tgz) and 2 (rebuilt_ext_tgz) of one repo."""
    root = tmp_path_factory.mktemp("served")
    data_dir = root / "var"
    port_holder = start_server(data_dir, root / "serve.log")
    try:
        engine = make_engine(port_holder.settings.resolved_database_url)
        publisher = Publisher(port_holder.settings, session_factory(engine))
        publisher.publish(ext_tgz)
        publisher.publish(rebuilt_ext_tgz)
        engine.dispose()
        yield port_holder
    finally:
        stop_server(port_holder)
