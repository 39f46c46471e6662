"""`/api/v1/images` on the running server: uploads streamed to disk, imports by path, hostile inputs."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ofedrepo.uploads import sha256_file
from synthetic import images as specs
from synthetic.images import hostile_images
from tests.conftest import RunningServer, start_server, stop_server

UPLOAD_LIMIT = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def import_dir(tmp_path_factory: pytest.TempPathFactory, disk_images: dict[str, Path]) -> Path:
    directory = tmp_path_factory.mktemp("imports")
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk_images[specs.CENTOS73.name]),
         str(directory / "centos73.raw")],
        check=True,
    )  # fmt: skip
    (directory / "escape.qcow2").symlink_to(disk_images[specs.ROCKY8.name])
    (directory / "alias.raw").symlink_to(directory / "centos73.raw")  # a link, even one that stays inside
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, import_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("images-api")
    environment = {"OFEDREPO_IMPORT_DIRS": str(import_dir), "OFEDREPO_IMAGE_MAX_UPLOAD_SIZE": str(UPLOAD_LIMIT)}
    running = start_server(root / "var", root / "serve.log", environment)
    yield running
    stop_server(running)


def upload(server: RunningServer, path: Path, name: str | None = None) -> httpx.Response:
    with path.open("rb") as stream:
        return httpx.post(f"{server.url}/api/v1/images", files={"file": (name or path.name, stream)}, timeout=300)


def leftovers(server: RunningServer) -> list[str]:
    data = server.settings.data_dir
    return [str(path) for directory in ("uploads", "work") for path in (data / directory).iterdir()]


def test_upload_inspects_and_a_second_upload_is_answered_from_the_database(
    server: RunningServer, disk_images: dict[str, Path]
) -> None:
    first = upload(server, disk_images[specs.ROCKY8.name], "overcloud-full.qcow2")
    assert first.status_code == 201, first.text
    image = first.json()
    assert image["filename"] == "overcloud-full.qcow2"
    assert image["sha256"] == sha256_file(disk_images[specs.ROCKY8.name])
    assert (image["distro"], image["os_version"], image["arch"]) == ("rocky", "8.6", "x86_64")
    assert image["kernels"] == [specs.ROCKY_OLD, specs.ROCKY_NEW]
    assert image["default_kernel"] == specs.ROCKY_OLD and image["ofed_distro"] == "rhel8.6"
    again = upload(server, disk_images[specs.ROCKY8.name])
    assert again.status_code == 200 and again.json()["id"] == image["id"]
    assert httpx.get(f"{server.url}/api/v1/images/{image['id']}").json() == image
    assert image["id"] in [listed["id"] for listed in httpx.get(f"{server.url}/api/v1/images").json()]
    assert leftovers(server) == [], "uploads are not kept"


def test_import_by_path_from_an_import_dir(server: RunningServer, import_dir: Path) -> None:
    response = httpx.post(f"{server.url}/api/v1/images", json={"path": str(import_dir / "centos73.raw")}, timeout=300)
    assert response.status_code == 201, response.text
    image = response.json()
    assert (image["distro"], image["os_version"], image["default_kernel"]) == ("centos", "7.3", specs.CENTOS_OLD)
    assert (import_dir / "centos73.raw").exists(), "an imported file is the operator's: left in place"
    assert leftovers(server) == [], "the copy an import reads from is not kept"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"path": "/etc/shadow"}, "outside the import directories"),
        ({"path": "relative/path.qcow2"}, "must be absolute"),
        ({"file": "x"}, "expected a JSON object"),
    ],
)
def test_import_outside_the_import_dirs_is_refused(server: RunningServer, body: dict[str, str], message: str) -> None:
    response = httpx.post(f"{server.url}/api/v1/images", json=body)
    assert response.status_code == 422 and message in response.json()["detail"]


@pytest.mark.parametrize("name", ["escape.qcow2", "alias.raw"])
def test_a_symlink_in_an_import_dir_is_refused_not_followed(server: RunningServer, import_dir: Path, name: str) -> None:
    response = httpx.post(f"{server.url}/api/v1/images", json={"path": str(import_dir / name)})
    assert response.status_code == 422 and f"{name!r} is a symbolic link" in response.json()["detail"]
    assert leftovers(server) == []


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory, disk_images: dict[str, Path]) -> dict[str, Path]:
    return hostile_images(tmp_path_factory.mktemp("hostile"), disk_images[specs.ROCKY8.name])


@pytest.mark.parametrize(
    ("name", "message"),
    [("random", "not a disk image"), ("truncated", "truncated or corrupt"), ("backing", "backing file")],
)
def test_hostile_uploads_get_422_and_are_not_kept(
    server: RunningServer, hostile_files: dict[str, Path], name: str, message: str
) -> None:
    response = upload(server, hostile_files[name])
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert leftovers(server) == []


def test_uploads_over_the_limit_get_413(server: RunningServer) -> None:
    declared = httpx.post(
        f"{server.url}/api/v1/images", files={"file": ("big.qcow2", b"\0" * (UPLOAD_LIMIT + 1024 * 1024))}
    )
    assert declared.status_code == 413 and "limit" in declared.json()["detail"]

    def chunked() -> Iterator[bytes]:
        boundary = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.qcow2"\r\n\r\n'
        yield boundary
        for _ in range(UPLOAD_LIMIT // (1024 * 1024) + 2):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--xyz--\r\n"

    streamed = httpx.post(
        f"{server.url}/api/v1/images",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
        timeout=60,
    )
    assert streamed.status_code == 413
    assert leftovers(server) == []


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"hello", {"content-type": "text/plain"}, 415),
        (b"--xyz--\r\n", {"content-type": "multipart/form-data; boundary=xyz"}, 422),
        (b"garbage", {"content-type": "multipart/form-data"}, 422),
        (b"{not json", {"content-type": "application/json"}, 422),
    ],
)
def test_malformed_requests_get_a_json_detail(
    server: RunningServer, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = httpx.post(f"{server.url}/api/v1/images", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_unknown_image_is_404(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/api/v1/images/999999")
    assert response.status_code == 404 and "999999" in response.json()["detail"]


def test_inspections_are_timed_in_the_metrics(server: RunningServer, disk_images: dict[str, Path]) -> None:
    assert upload(server, disk_images[specs.ROCKY8.name]).status_code in (200, 201)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    count = next(line for line in metrics.splitlines() if line.startswith("ofedrepo_inspection_duration_seconds_count"))
    assert float(count.split()[-1]) >= 1
