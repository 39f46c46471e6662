"""`/api/v1/bundles` on the running server: tgz, iso and directory bundles, stored once, read-only; refusals."""

import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.support.synthetic_bundle import BundleSpec, make_iso, make_tgz

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
