"""NVIDIA-shaped bundles of three generations, end to end: what DIB's mlnx-ofed element installs works.

For the current flat generation (5.8), a 4.x one whose script keeps the GA kmods, and the 5.0 split
COMMON + MLNX_LIBS/UPSTREAM_LIBS layout, through the running server: bundle upload, request for a kernel,
the build (the bundle's own script, module signing configured), then the real dnf installs, with
``gpgcheck=1`` and ``repo_gpgcheck=1``, each package list DIB users give: the seed article's, the element's
default and the one ``/api/v1/repos/{id}/dib`` hands out. Each installs the modules built for the kernel
(vermagic, signature) and nothing for another kernel, and every group the bundle ships resolves.
"""

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ofedrepo.repos.verify import signature_problem
from synthetic.bundle import BundleSpec, add_kernel_support, make_kernel_sources, make_module_signing_keys, make_tgz
from synthetic.vendor import mlnxofedinstall
from tests.conftest import VENV_BIN, RunningServer, start_server, stop_server
from tests.integration.test_dnf import dnf
from tests.integration.test_pipeline import ENDED, build_log, module_vermagic, request, upload, wait_for
from tests.support.kept_scratch import kept_tree

TARGETS = {
    "current": "4.18.0-372.26.1.el8_6.x86_64",
    "legacy4": "3.10.0-1160.105.1.el7.x86_64",
    "split5": "4.18.0-147.8.1.el8_1.x86_64",
}
BROKEN_KERNEL = "4.18.0-372.99.1.el8_6.x86_64"
COMPILER_ERROR = (
    "drivers/net/ethernet/mellanox/mlx5/core/main.c:1432:9: error: implicit declaration of function "
    "'pci_enable_msix_range' [-Werror=implicit-function-declaration]"
)
SEED_PKGLIST = "mlnx-ofed-hypervisor mlnx-fw-updater"  # the StackHPC article's TripleO YAML
ELEMENT_PKGLIST = "mlnx-ofed-hpc mlnx-fw-updater"  # the mlnx-ofed element's default


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-kernels")
    for kernel in TARGETS.values():
        make_kernel_sources(root, kernel)
    make_kernel_sources(root, BROKEN_KERNEL, compile_error=COMPILER_ERROR)
    return root


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, kernels: Path, generation_bundles: dict[str, tuple[BundleSpec, Path]]
) -> Iterator[RunningServer]:
    """A server with its worker, Secure Boot module signing configured, and the three bundles uploaded."""
    root = tmp_path_factory.mktemp("real-bundles")
    private_key, certificate = make_module_signing_keys(root / "module-signing")
    environment = {
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(kernels),
        "OFEDREPO_WORKER_CONCURRENCY": "3",
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        "OFEDREPO_MODULE_SIGN_PRIV_KEY": str(private_key),
        "OFEDREPO_MODULE_SIGN_PUB_KEY": str(certificate),
    }
    running = start_server(root / "var", root / "serve.log", environment, worker=True)
    try:
        for _, bundle in generation_bundles.values():
            uploaded = upload(running, "bundles", make_tgz(bundle, root / f"{bundle.name}.tgz"))
            assert uploaded.status_code == 201, uploaded.text
        yield running
    finally:
        stop_server(running)


def repo_definition(version_url: str) -> str:
    """What DIB's element writes from DIB_MLNX_OFED_REPO, with the metadata signature checked too."""
    return (
        f"[mlnx_ofed]\nname=MLNX_OFED\nbaseurl={version_url}/RPMS\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
        f"gpgkey={version_url}/RPM-GPG-KEY-Mellanox\n"
    )


def stock_groups(bundle: Path) -> set[str]:
    """The mlnx-ofed-<group> packages NVIDIA's bundle ships."""
    return {
        path.name.split(f"-{(bundle / '.mlnx').read_text().split('-')[0]}-")[0]
        for path in bundle.rglob("mlnx-ofed-*.rpm")
    }


def installed_kernels(root: Path) -> set[str]:
    modules = root / "installroot" / "lib" / "modules"
    return {entry.name for entry in modules.iterdir()} if modules.is_dir() else set()


@pytest.mark.parametrize("generation", ["current", "legacy4", "split5"])
def test_a_rebuilt_repo_installs_with_every_dib_package_list(
    tmp_path: Path, service: RunningServer, generation_bundles: dict[str, tuple[BundleSpec, Path]], generation: str
) -> None:
    spec, bundle = generation_bundles[generation]
    kernel = TARGETS[generation]
    asked = request(service, kernel=kernel)
    assert asked.status_code == 202, asked.text
    assert asked.json()["bundle"] == spec.name and asked.json()["build"]["rebuild"] is True
    build = wait_for(service, asked.json()["build"]["id"], ENDED, timeout=300)
    log = build_log(service, build["id"])
    assert build["state"] == "succeeded", log
    assert "module signing: MODULE_SIGN_PRIV_KEY and MODULE_SIGN_PUB_KEY are passed" in log
    assert "all signed by the key of signing_key.x509" in log and "regenerating mlnx-ofed-hypervisor for" in log
    left_out = [line for line in log.splitlines() if "left out " in line]
    # Left out: what belongs to another kernel, and a stock package whose name a rebuilt one for K also has.
    assert left_out and all(
        spec.ga_kernel in line or "names another kernel" in line or f", built for {kernel}" in line for line in left_out
    ), left_out
    if generation == "legacy4":  # the 4.x script kept the GA kmods; the version does not
        assert any("left out kmod-mlnx-ofa_kernel-" in line for line in left_out)
    if generation == "split5":
        assert "library set: RPMS/UPSTREAM_LIBS" in log

    repo = httpx.get(f"{service.url}/api/v1/repos/{build['repo_id']}", timeout=10).json()
    version = repo["versions"][-1]
    packages = set(version["packages"])
    snippet = httpx.get(f"{service.url}/api/v1/repos/{repo['id']}/dib", timeout=10).json()
    snippet_list = snippet["environment"]["DIB_MLNX_OFED_PKGLIST"]
    assert set(snippet_list.split()) <= packages and snippet_list.startswith("mlnx-ofed-")
    assert stock_groups(bundle) <= packages  # every group the bundle ships is in the version...
    definition = repo_definition(version["url"])
    closure = dnf(tmp_path / "closure", definition, "repoclosure", "--repo", "mlnx_ofed", plugin="repoclosure")
    assert "nothing provides" not in closure.stdout  # ...and every package in it resolves
    listed = dnf(tmp_path / "files", definition, "repoquery", "-q", "-l", "*").stdout.split()
    assert {path.split("/")[3] for path in listed if path.startswith("/lib/modules/")} == {kernel}

    for pkglist in dict.fromkeys([SEED_PKGLIST, ELEMENT_PKGLIST, snippet_list]):
        root = tmp_path / re.sub(r"\W+", "-", pkglist)
        dnf(root, definition, "install", *pkglist.split())
        assert installed_kernels(root) == {kernel}, pkglist  # nothing for the GA kernel or any other
        (module,) = (root / "installroot" / "lib" / "modules" / kernel).rglob("mlx5_core.ko")
        assert module_vermagic(module) == kernel, pkglist
        certificate = Path(service.environment["OFEDREPO_MODULE_SIGN_PUB_KEY"])
        assert signature_problem(module.read_bytes(), certificate) is None, pkglist


def test_a_request_for_the_ga_kernel_publishes_the_bundles_own_packages(
    tmp_path: Path, service: RunningServer, generation_bundles: dict[str, tuple[BundleSpec, Path]]
) -> None:
    spec, _ = generation_bundles["legacy4"]
    asked = request(service, kernel=spec.ga_kernel)
    assert asked.status_code == 202 and asked.json()["build"]["rebuild"] is False, asked.text
    build = wait_for(service, asked.json()["build"]["id"], ENDED)
    log = build_log(service, build["id"])
    assert build["state"] == "succeeded" and build["rebuild"] is False, log
    assert "no rebuild" in log and "$ bash" not in log
    repo = httpx.get(f"{service.url}/api/v1/repos/{build['repo_id']}", timeout=10).json()
    dnf(tmp_path, repo_definition(repo["versions"][-1]["url"]), "install", *SEED_PKGLIST.split())
    assert installed_kernels(tmp_path) == {spec.ga_kernel}


def test_a_compile_error_shows_in_the_build_log_and_the_scratch_is_kept(service: RunningServer) -> None:
    build_id = request(service, kernel=BROKEN_KERNEL).json()["build"]["id"]
    build = wait_for(service, build_id, ENDED, timeout=300)
    assert build["state"] == "failed"
    assert "exited with status 1: " in str(build["error"]) and COMPILER_ERROR in str(build["error"])
    log = build_log(service, build_id)
    assert COMPILER_ERROR in log and "ERROR: Failed executing" in log and "\x1b[" not in log
    assert re.search(r"==> mlnx_iso\.[0-9]+_logs/OFED\.[0-9]+\.logs/mlnx-ofa_kernel-5\.8\.rpmbuild\.log <==", log)
    kept = Path(re.search(r"kept in (\S+) for 24 h", log).group(1))  # type: ignore[union-attr]
    assert kept.name.startswith(f"failed-build-{build_id}-")
    with kept_tree(kept) as tree:
        assert list(tree.rglob("mlnx_ofed_iso.*.log"))


def test_the_local_runner_refuses_a_debian_host(tmp_path: Path, bundle_tgz: Path) -> None:
    """The default: preflight on. This host is Debian with lsb_release, where NVIDIA's script makes .debs."""
    server = start_server(
        tmp_path / "var", tmp_path / "serve.log", {"OFEDREPO_BUILD_LOCAL_PREFLIGHT": "true"}, worker=True
    )
    try:
        assert upload(server, "bundles", bundle_tgz).status_code == 201
        build = wait_for(server, request(server, kernel=TARGETS["current"]).json()["build"]["id"], ENDED)
        assert build["state"] == "failed"
        error = str(build["error"])
        assert error.startswith("cannot build on this host: this host is Debian (lsb_release)")
        assert "OFEDREPO_BUILD_RUNNER=podman" in error and "\n" not in error
    finally:
        stop_server(server)


def publish(tmp_path: Path, source: Path, libraries: str = "upstream") -> dict[str, object]:
    environment = {**os.environ, "OFEDREPO_DATA_DIR": str(tmp_path / "var"), "OFEDREPO_BUNDLE_LIBRARIES": libraries}
    environment.pop("OFEDREPO_DATABASE_URL", None)
    completed = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "publish", str(source), "--json"], env=environment, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return dict(json.loads(completed.stdout))


def published_version(tmp_path: Path, result: dict[str, object]) -> Path:
    return tmp_path / "var" / "repos" / str(result["bundle"]) / str(result["kernel"]) / str(result["version"])


def test_ofedrepo_publish_takes_real_format_tgz_iso_and_directory(
    tmp_path: Path, kernels: Path, generation_bundles: dict[str, tuple[BundleSpec, Path]]
) -> None:
    outputs = {
        "tgz": add_kernel_support(generation_bundles["split5"][1], TARGETS["split5"], kernels / TARGETS["split5"],
                                  tmp_path / "split", skip_repo=False),
        "iso": add_kernel_support(generation_bundles["current"][1], TARGETS["current"], kernels / TARGETS["current"],
                                  tmp_path / "current", iso=True),
    }  # fmt: skip
    legacy = add_kernel_support(
        generation_bundles["legacy4"][1], TARGETS["legacy4"], kernels / TARGETS["legacy4"], tmp_path / "legacy"
    )
    subprocess.run(["tar", "xzf", str(legacy), "-C", str(legacy.parent)], check=True)
    outputs["directory"] = legacy.parent / legacy.name.removesuffix(".tgz")
    for kind, source in outputs.items():
        result = publish(tmp_path / kind, source)
        generation = {"tgz": "split5", "iso": "current", "directory": "legacy4"}[kind]
        assert (result["bundle"], result["kernel"]) == (generation_bundles[generation][0].name, TARGETS[generation])
        assert result["left_out"] and "mlnx-ofed-hypervisor" in result["regenerated"]  # type: ignore[operator]
        version = published_version(tmp_path / kind, result)
        rpms = sorted(path.name for path in (version / "RPMS").glob("*.rpm"))
        assert len(rpms) == len(set(rpms)) == result["packages"]
        definition = repo_definition(f"file://{version}")
        closure = dnf(
            tmp_path / f"{kind}-closure", definition, "repoclosure", "--repo", "mlnx_ofed", plugin="repoclosure"
        )
        assert "nothing provides" not in closure.stdout
        dnf(tmp_path / f"{kind}-install", definition, "install", *SEED_PKGLIST.split())
        assert installed_kernels(tmp_path / f"{kind}-install") == {TARGETS[generation]}


def test_one_library_set_of_a_split_bundle_as_configured(
    tmp_path: Path, kernels: Path, generation_bundles: dict[str, tuple[BundleSpec, Path]]
) -> None:
    spec, bundle = generation_bundles["split5"]
    ext = add_kernel_support(bundle, TARGETS["split5"], kernels / TARGETS["split5"], tmp_path / "ext")
    for libraries, expected in (("upstream", "rdma-core"), ("mlnx", "libmlx5")):
        result = publish(tmp_path / libraries, ext, libraries)
        names = [path.name for path in (published_version(tmp_path / libraries, result) / "RPMS").glob("*.rpm")]
        libibverbs = [name for name in names if name.startswith("libibverbs-") and "utils" not in name]
        version = "50mlnx1" if libraries == "upstream" else "41mlnx1"
        assert len(libibverbs) == 1 and version in libibverbs[0], names  # one set, never both
        other = set(mlnxofedinstall.LIBRARIES["mlnx" if libraries == "upstream" else "upstream"])
        own = set(mlnxofedinstall.LIBRARIES[libraries])
        assert any(name.startswith(expected + "-") for name in names)
        assert not any(name.startswith(f"{library}-") for name in names for library in other - own)
