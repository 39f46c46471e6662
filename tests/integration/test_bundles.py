"""`/api/v1/bundles` on the running server: tgz, iso and directory bundles, stored once, read-only; refusals."""

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ofedrepo.bundles.store import tree_digest
from ofedrepo.uploads import sha256_file
from synthetic.bundle import LEGACY, BundleSpec, make_iso, make_tgz
from tests.conftest import VENV_BIN, RunningServer, service_environment, start_server, stop_server

UPLOAD_LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def import_dir(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Path:
    directory = tmp_path_factory.mktemp("bundle-imports")
    shutil.copytree(bundle_dir, directory / bundle_dir.name, symlinks=True)
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, import_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("bundles-api")
    environment = {"OFEDREPO_IMPORT_DIRS": str(import_dir), "OFEDREPO_BUNDLE_MAX_UPLOAD_SIZE": str(UPLOAD_LIMIT)}
    running = start_server(root / "var", root / "serve.log", environment)
    yield running
    stop_server(running)


def upload(server: RunningServer, path: Path) -> httpx.Response:
    with path.open("rb") as stream:
        return httpx.post(f"{server.url}/api/v1/bundles", files={"file": (path.name, stream)}, timeout=300)


def by_path(server: RunningServer, path: Path | str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/bundles", json={"path": str(path)}, timeout=300)


def stored_files(server: RunningServer, sha256: str) -> list[Path]:
    return [path for path in (server.settings.data_dir / "bundles" / sha256).rglob("*") if path.is_file()]


def test_an_iso_is_identified_and_stored_read_only_once(
    server: RunningServer, bundle_dir: Path, tmp_path: Path
) -> None:
    iso = make_iso(bundle_dir, tmp_path / f"{bundle_dir.name}.iso")
    first = upload(server, iso)
    assert first.status_code == 201, first.text
    bundle = first.json()
    assert bundle["name"] == BundleSpec().name and len(bundle["sha256"]) == 64
    files = stored_files(server, bundle["sha256"])
    assert any(path.name == "mlnx_add_kernel_support.sh" for path in files)
    assert all(not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) for path in files)
    again = upload(server, iso)
    assert again.status_code == 200 and again.json()["id"] == bundle["id"]


def test_a_directory_under_an_import_dir_is_copied_in(server: RunningServer, import_dir: Path) -> None:
    source = import_dir / BundleSpec().name
    first = by_path(server, source)
    assert first.status_code in (200, 201), first.text
    assert by_path(server, source).status_code == 200
    stored = stored_files(server, first.json()["sha256"])
    assert stored and all(import_dir not in path.resolve().parents for path in stored)


def test_paths_outside_the_import_dirs_are_refused(server: RunningServer, import_dir: Path) -> None:
    for path in ("/etc", "/", f"{import_dir}/../../etc", "relative/path"):
        refused = by_path(server, path)
        assert refused.status_code in (403, 404, 422) and "detail" in refused.json(), path


def tgz_of(members: dict[str, bytes | str], path: Path) -> Path:
    """A tarball; a ``str`` value makes a symlink to it."""
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return path


def test_what_is_not_a_bundle_is_refused_saying_what_is_missing(
    server: RunningServer, bundle_dir: Path, tmp_path: Path
) -> None:
    name = BundleSpec().name
    no_script = tmp_path / "no-script"
    shutil.copytree(bundle_dir, no_script / name, symlinks=True)
    (no_script / name / "mlnx_add_kernel_support.sh").unlink()
    refused = upload(server, make_tgz(no_script / name, tmp_path / "no-script.tgz"))
    assert refused.status_code == 422 and "mlnx_add_kernel_support.sh" in refused.json()["detail"]

    empty = upload(server, tgz_of({f"{name}/README": b"hello"}, tmp_path / "empty.tgz"))
    assert empty.status_code == 422 and "detail" in empty.json()
    escaping = upload(server, tgz_of({f"{name}/.mlnx": "/etc/shadow", "../../escape": b"x"}, tmp_path / "evil.tgz"))
    assert escaping.status_code == 422 and "detail" in escaping.json()
    assert not (server.settings.data_dir.parent / "escape").exists()
    assert [path.name for path in (server.settings.data_dir / "uploads").iterdir()] == []


@pytest.mark.parametrize(
    ("sent", "called"),
    [("MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64.tgz", "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64.tgz"),
     ("doca-host-3.1.0-091000_25.07_rhel96.x86_64.rpm", "doca-host-3.1.0-091000_25.07_rhel96.x86_64.rpm"),
     ("-rf my bundle,v2.tgz", "upload")],
)  # fmt: skip
def test_a_refused_upload_is_named_as_the_client_sent_it(
    server: RunningServer, tmp_path: Path, sent: str, called: str
) -> None:
    """Refusals name the file the client sent, never the service's own name for it on disk; a name a tool
    could misread (a leading dash, spaces, commas) is kept off the disk."""
    refused = httpx.post(f"{server.url}/api/v1/bundles", files={"file": (sent, b"not an archive" * 100)}, timeout=60)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith(f"{called}: ") and "upload-" not in refused.json()["detail"]
    assert list((server.settings.data_dir / "uploads").iterdir()) == []


def test_an_upload_over_the_limit_gets_413(server: RunningServer, tmp_path: Path) -> None:
    big = tmp_path / "big.tgz"
    with big.open("wb") as handle:
        handle.truncate(UPLOAD_LIMIT + 1024)
    refused = upload(server, big)
    assert refused.status_code == 413 and "OFEDREPO_BUNDLE_MAX_UPLOAD_SIZE" in refused.json()["detail"]


def test_a_split_bundle_iso_keeps_its_library_sets_links(
    server: RunningServer, generation_bundles: dict[str, tuple[BundleSpec, Path]], tmp_path: Path
) -> None:
    """5.0-5.1 bundles link MLNX_LIBS/ and UPSTREAM_LIBS/ into ../COMMON: Rock Ridge keeps the links."""
    spec, bundle = generation_bundles["split5"]
    uploaded = upload(server, make_iso(bundle, tmp_path / f"{bundle.name}.iso"))
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["supported_kernels"] == [spec.ga_kernel]
    stored = server.settings.data_dir / "bundles" / uploaded.json()["sha256"] / spec.name / "RPMS" / "UPSTREAM_LIBS"
    links = [path for path in stored.glob("*.rpm") if path.is_symlink()]
    assert links and all(os.readlink(path).startswith("../COMMON/") and path.resolve().is_file() for path in links)


def test_a_directory_with_a_file_name_that_is_not_utf8_is_imported(server: RunningServer, import_dir: Path) -> None:
    odd = import_dir / "odd" / BundleSpec().name
    shutil.copytree(import_dir / BundleSpec().name, odd, symlinks=True)
    (odd / "docs" / os.fsdecode(b"release-notes-\xe9t\xe9.txt")).write_text("latin-1 name\n")
    answer = by_path(server, odd)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == BundleSpec().name


def test_a_symlink_in_an_import_dir_is_refused_not_followed(
    server: RunningServer, import_dir: Path, bundle_tgz: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(bundle_tgz, outside / "bundle.tgz")
    (import_dir / "escape.tgz").symlink_to(outside / "bundle.tgz")
    (import_dir / "escape-dir").symlink_to(outside)
    for path, component in ((import_dir / "escape.tgz", "escape.tgz"), (import_dir / "escape-dir" / "bundle.tgz",
                                                                         "escape-dir")):  # fmt: skip
        refused = by_path(server, path)
        assert refused.status_code == 422, refused.text
        assert f"{component!r} is a symbolic link" in refused.json()["detail"]
    fifo = import_dir / "fifo.tgz"
    os.mkfifo(fifo)
    refused = by_path(server, fifo)
    assert refused.status_code == 422 and "not a regular file" in refused.json()["detail"]


@pytest.fixture(scope="module")
def race(
    tmp_path_factory: pytest.TempPathFactory,
    import_dir: Path,
    bundle_dir: Path,
    generation_bundles: dict[str, tuple[BundleSpec, Path]],
) -> tuple[Path, Path]:
    """``<import dir>/race`` holding the current bundle as ``bundle/`` and ``bundle.tgz``, and a directory
    outside holding another bundle (the legacy one) under the same names."""
    inside = import_dir / "race"
    outside = tmp_path_factory.mktemp("outside-the-import-dirs") / "race"
    for parent, source in ((inside, bundle_dir), (outside, generation_bundles["legacy4"][1])):
        parent.mkdir()
        shutil.copytree(source, parent / "bundle", symlinks=True)  # named alike: only content tells them apart
        make_tgz(parent / "bundle", parent / "bundle.tgz")
    return inside, outside


def swap_for_a_link(inside: Path, outside: Path, stop: threading.Event) -> int:
    """Replace the directory ``inside`` by a link to ``outside`` and back, as fast as possible, until told."""
    parked = inside.with_name(f"{inside.name}.parked")
    swaps = 0
    while not stop.is_set():
        os.rename(inside, parked)
        os.symlink(outside, inside)
        time.sleep(0.001)
        os.unlink(inside)
        os.rename(parked, inside)
        time.sleep(0.001)
        swaps += 1
    return swaps


@pytest.mark.parametrize("name", ["bundle.tgz", "bundle"])
def test_swapping_a_directory_for_a_link_during_imports_registers_nothing_from_outside(
    server: RunningServer, race: tuple[Path, Path], name: str
) -> None:
    inside, outside = race
    stop = threading.Event()
    deadline = time.monotonic() + 4
    answers: list[httpx.Response] = []

    def importing() -> None:
        while time.monotonic() < deadline:
            answers.append(by_path(server, inside / name))

    with ThreadPoolExecutor(5) as pool:
        swapper = pool.submit(swap_for_a_link, inside, outside, stop)
        try:
            for importer in [pool.submit(importing) for _ in range(4)]:
                importer.result()
        finally:
            stop.set()
        assert swapper.result() > 100
    assert inside.is_dir() and not inside.is_symlink()

    assert answers and all(answer.status_code in (200, 201, 422) for answer in answers), {a.text for a in answers}
    assert all("detail" in answer.json() for answer in answers if answer.status_code == 422)
    taken = {answer.json()["id"]: answer.json() for answer in answers if answer.status_code in (200, 201)}
    assert taken, "the bundle was imported"
    expected = {"bundle.tgz": sha256_file(inside / "bundle.tgz"), "bundle": tree_digest(inside / "bundle")}[name]
    for bundle in taken.values():
        assert (bundle["sha256"], bundle["name"]) == (expected, BundleSpec().name)
        stored = server.settings.data_dir / "bundles" / bundle["sha256"] / bundle["name"]
        assert tree_digest(stored) == tree_digest(inside / "bundle"), "stored content is not what was hashed"
    for bundle in httpx.get(f"{server.url}/api/v1/bundles").json():
        assert bundle["name"] != LEGACY.name, "a bundle from outside the import dirs was registered"
    assert list((server.settings.data_dir / "uploads").iterdir()) == []


def test_the_cli_takes_a_bundle_from_what_it_opened_and_keeps_no_copy(bundle_dir: Path, tmp_path: Path) -> None:
    environment = service_environment(tmp_path / "var", "http://127.0.0.1:8000", None)
    add = [str(VENV_BIN / "ofedrepo"), "bundle", "add", "--json"]
    ran = subprocess.run([*add, str(bundle_dir)], env=environment, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["sha256"] == tree_digest(bundle_dir)
    assert list((tmp_path / "var" / "uploads").iterdir()) == []
    os.mkfifo(tmp_path / "fifo.tgz")
    refused = subprocess.run([*add, str(tmp_path / "fifo.tgz")], env=environment, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "neither a bundle archive" in refused.stderr
