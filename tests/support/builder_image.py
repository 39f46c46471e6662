"""A builder image for the container runner's tests, made here: no registry is reachable, so the image is a
debootstrapped Debian userland with the rpm tooling the synthetic bundles' script uses, imported with
``podman import``. Debian's rpm builds RPMs like a RHEL host's (the synthetic script never switches to DEB mode,
see synthetic/vendor/mlnx_add_kernel_support.py). The image is tagged by what it holds and kept in podman's
storage, so a machine makes it once (about two minutes), as the element test's chroot is made once per session.

This host runs hybrid cgroups v1, which crun refuses ("cgroups in hybrid mode not supported"), and its hard
rlimits (nofile 20000, nproc 96369) are below podman's defaults: ``containers_conf`` writes the
containers.conf the tests point podman at (``CONTAINERS_CONF``), with runc and lower default ulimits.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "rpm", "perl", "make", "gcc", "libc6-dev", "createrepo-c", "cpio", "xz-utils", "procps")
IMAGE = "localhost/ofedrepo-test-builder"
CONTAINERS_CONF = """\
[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
"""


def containers_conf(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "containers.conf"
    path.write_text(CONTAINERS_CONF)
    return path


def podman_problem(environment: dict[str, str]) -> str | None:
    """Why podman cannot run containers here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (make setup installs it)"
    info = subprocess.run(["podman", "info"], env=environment, capture_output=True, text=True, timeout=120)
    return None if info.returncode == 0 else f"podman info failed: {info.stderr.strip()[-300:]}"


def builder_image(work: Path, environment: dict[str, str]) -> str:
    """The image's name, made (debootstrap, then ``podman import``) unless podman already holds it."""
    tag = hashlib.sha256(" ".join((SUITE, *PACKAGES)).encode()).hexdigest()[:12]
    name = f"{IMAGE}:{tag}"
    exists = subprocess.run(["podman", "image", "exists", name], env=environment, capture_output=True)
    if exists.returncode == 0:
        return name
    root = work / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
        check=True, capture_output=True, timeout=540,  # within pytest's 600 s
    )  # fmt: skip
    # Debian's rpm keeps its database in ~/.rpmdb; a RHEL builder has it here.
    (root / "etc" / "rpm").mkdir(exist_ok=True)
    (root / "etc" / "rpm" / "macros.dbpath").write_text("%_dbpath /var/lib/rpm\n")
    (root / "var" / "lib" / "rpm").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:  # closed and waited for
        imported = subprocess.run(
            ["podman", "import", "-", name], stdin=tar.stdout, env=environment, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
    if imported.returncode != 0:
        raise RuntimeError(f"podman import failed: {imported.stderr}")
    shutil.rmtree(root, ignore_errors=True)
    return name


def podman_settings(root: Path) -> dict[str, str]:
    """The environment of a service whose builds run in podman with the test builder image (and podman's own
    containers.conf); the calling test is skipped, saying why, where podman or the image cannot be had."""
    engine = {**os.environ, "CONTAINERS_CONF": str(containers_conf(root / "containers"))}
    problem = podman_problem(engine)
    if problem:
        pytest.skip(problem)
    try:
        image = builder_image(root / "image", engine)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"no builder image: debootstrap could not reach Debian's mirror ({error.stderr[-200:]!r})")
    return {
        "CONTAINERS_CONF": engine["CONTAINERS_CONF"],
        "OFEDREPO_BUILD_RUNNER": "podman",
        "OFEDREPO_BUILD_CONTAINER_IMAGES": f"rhel8={image}",
    }


def build_containers(environment: dict[str, str], every_deployment: bool = False) -> list[str]:
    """Names of the containers (running or not) that the builds of the service of ``environment`` left behind;
    another deployment's on this host (another test run, a person's) are not its, unless ``every_deployment``."""
    prefix = "ofedrepo-build-"
    if not every_deployment:
        prefix += (Path(environment["OFEDREPO_DATA_DIR"]) / "instance-id").read_text().strip() + "-"
    listed = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], env=environment, capture_output=True, text=True, check=True
    )
    return [name for name in listed.stdout.split() if name.startswith(prefix)]
