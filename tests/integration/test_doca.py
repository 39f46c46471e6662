"""DOCA-OFED end to end through the running server, for every generation the public sources show (2.10, 3.0,
3.1 with its sources inside doca-extra, 3.2 DKMS only), each registered both as NVIDIA's local-repo package and
as an unpacked online tree: a request for a kernel NVIDIA did not build for; doca-kernel-support (the model) in
the sandbox; then the real dnf installs the DIB snippet's package list with ``gpgcheck=1``, and separately plain
``doca-ofed``, and gets the modules built for that kernel, no DKMS package and no module for another kernel. A
compile failure shows its component log in the build log; ``ofedrepo publish`` takes the tool's output made
elsewhere; the model's own behaviours (-k on EL9, offline dependency installs, option grammar, --dirty) are
checked by running it."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ofedrepo.bundles.archive import Limits
from ofedrepo.bundles.doca import TOOLS_PREFIX, DocaOfed, unpack_tools
from ofedrepo.bundles.vendor import Workspace
from ofedrepo.process import clean_environment
from ofedrepo.repos.verify import signature_problem
from ofedrepo.storage import DataDir
from synthetic import bundle as synthetic_bundle
from synthetic.bundle import make_kernel_sources, make_module_signing_keys
from synthetic.doca import (
    DOCA_31,
    DOCA_32,
    GENERATIONS,
    DocaSpec,
    build_dependencies_registered,
    make_doca_tree,
    make_local_repo_package,
)
from tests.conftest import VENV_BIN, RunningServer, start_server, stop_server
from tests.integration.test_dnf import dnf
from tests.integration.test_pipeline import ENDED, build_log, module_vermagic, request, upload, wait_for
from tests.integration.test_real_bundles import installed_kernels, repo_definition
from workers.runner import host_layout, sandbox_argv

Key = synthetic_bundle.TestKey
KERNEL = "5.14.0-570.42.2.el9_6.x86_64"  # an errata kernel of RHEL 9.6: no repository has modules for it
KERNEL_95 = "5.14.0-503.26.1.el9_5.x86_64"  # one of RHEL 9.5 (the kernel confluent-docs' 2.10 how-to builds for)
BROKEN_KERNEL = "5.14.0-570.49.1.el9_6.x86_64"
COMPILER_ERROR = "drivers/infiniband/core/umem.c:211:17: error: 'struct ib_umem' has no member named 'owning_mm'"
FORMS = ("local-repo", "online-tree")


def kernel_metapackage(kernel: str) -> str:
    return "doca-kernel-" + kernel.replace("-", ".").replace("_", ".")


def target_kernel(spec: DocaSpec) -> str:
    """An errata kernel of the spec's distro that NVIDIA built nothing for."""
    return KERNEL_95 if spec.tag == "rhel9.5" else KERNEL


class Inputs:
    """Every generation's online tree and local-repo package, made once."""

    def __init__(self, root: Path, key: Key) -> None:
        self.root = root
        self.trees = {spec: make_doca_tree(spec, key, root / "mirror" / spec.doca_version) for spec in GENERATIONS}
        packages = root / "doca-host"
        packages.mkdir()
        self.local_repos = {
            spec: make_local_repo_package(spec, tree, key, packages) for spec, tree in self.trees.items()
        }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, test_key: Key) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("doca"), test_key)


@pytest.fixture(scope="module")
def prepared_builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with build_dependencies_registered(tmp_path_factory.mktemp("doca-dependencies")):
        yield


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, inputs: Inputs, prepared_builder: None
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("doca-service")
    kernels = root / "kernels"
    for kernel in (KERNEL, KERNEL_95):
        make_kernel_sources(kernels, kernel)
    make_kernel_sources(kernels, BROKEN_KERNEL, compile_error=COMPILER_ERROR)
    private_key, certificate = make_module_signing_keys(root / "module-signing")
    environment = {
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(kernels),
        "OFEDREPO_WORKER_CONCURRENCY": "2",
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        "OFEDREPO_IMPORT_DIRS": str(inputs.root),
        "OFEDREPO_MODULE_SIGN_PRIV_KEY": str(private_key),
        "OFEDREPO_MODULE_SIGN_PUB_KEY": str(certificate),
    }
    running = start_server(root / "var", root / "serve.log", environment, worker=True)
    try:
        yield running
    finally:
        stop_server(running)


def registered(service: RunningServer, inputs: Inputs, spec: DocaSpec, form: str) -> dict:
    """The spec's repository, uploaded as its local-repo package or imported as its online tree."""
    if form == "local-repo":
        answer = upload(service, "bundles", inputs.local_repos[spec])
    else:
        answer = httpx.post(f"{service.url}/api/v1/bundles", json={"path": str(inputs.trees[spec])}, timeout=120)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("spec", GENERATIONS, ids=lambda spec: spec.doca_version)
def test_doca_repositories_register_with_their_identity(
    service: RunningServer, inputs: Inputs, spec: DocaSpec, form: str
) -> None:
    bundle = registered(service, inputs, spec, form)
    assert bundle["kind"] == "doca" and bundle["name"] == spec.name
    assert (bundle["doca_version"], bundle["ofed_version"]) == (spec.doca_version, spec.ofed_version)
    assert (bundle["distro"], bundle["arch"]) == (spec.tag, "x86_64")
    told_by = spec.local_repo_file.removesuffix(".rpm") if form == "local-repo" else f"doca/{spec.doca_version}/"
    assert bundle["identified_by"].startswith(told_by), bundle
    assert bundle["supported_kernels"] == ([] if spec.dkms else [spec.ga_kernel])  # DKMS only: nothing prebuilt


def test_what_does_not_tell_what_it_is_is_refused_saying_why(
    service: RunningServer, inputs: Inputs, tmp_path: Path
) -> None:
    tree = inputs.trees[DOCA_32]
    # Without doca-extra there is nothing to rebuild with: refused, saying what is missing.
    partial = inputs.root / "mirror" / f"partial-{tmp_path.name}" / "doca" / "3.2.0" / "rhel9" / "x86_64"
    shutil.copytree(tree, partial)
    for package in partial.glob("doca-extra-*.rpm"):
        package.unlink()
    refused = httpx.post(f"{service.url}/api/v1/bundles", json={"path": str(partial)}, timeout=120)
    assert refused.status_code == 422 and "without doca-extra" in refused.json()["detail"], refused.text
    # A tree copied where its path no longer says its version and distro: the packages' releases do not tell.
    renamed = inputs.root / "mirror" / f"doca32-{tmp_path.name}"
    shutil.copytree(tree, renamed)
    (renamed / "README").write_text("a partial mirror\n")  # not the tree registered already (same digest)
    refused = httpx.post(f"{service.url}/api/v1/bundles", json={"path": str(renamed)}, timeout=120)
    assert refused.status_code == 422 and "doca/<version>/<distro>/<arch>" in refused.json()["detail"], refused.text
    # A path that names another release than its packages are.
    lying = inputs.root / "mirror" / f"lying-{tmp_path.name}" / "doca" / "3.1.0" / "rhel9.6" / "x86_64"
    shutil.copytree(tree, lying)
    (lying / "README").write_text("a mirror under another name\n")
    refused = httpx.post(f"{service.url}/api/v1/bundles", json={"path": str(lying)}, timeout=120)
    assert refused.status_code == 422 and "another DOCA release" in refused.json()["detail"], refused.text
    registered(service, inputs, DOCA_32, "online-tree")  # the page lists what is registered, beside no refusal
    page = httpx.get(f"{service.url}/ui/bundles", timeout=10).text
    assert "DOCA 3.2.0" in page and DOCA_32.name in page


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("spec", GENERATIONS, ids=lambda spec: spec.doca_version)
def test_a_doca_repo_for_a_kernel_installs_its_modules_without_dkms(
    tmp_path: Path, service: RunningServer, inputs: Inputs, spec: DocaSpec, form: str
) -> None:
    bundle = registered(service, inputs, spec, form)
    kernel = target_kernel(spec)
    asked = request(service, kernel=kernel, bundle_id=bundle["id"])
    assert asked.status_code == 202, asked.text
    assert asked.json()["bundle"] == spec.name and asked.json()["build"]["rebuild"] is True
    build = wait_for(service, asked.json()["build"]["id"], ENDED, timeout=300)
    log = build_log(service, build["id"])
    assert build["state"] == "succeeded", log
    assert re.search(r"Building under /tmp/DOCA\.\w+", log) and "Missing package mlnx-nfsrdma, skipping" in log
    assert "==> doca-kernel-support output <==" in log and "mlnx_add_kernel_support.sh" not in log
    assert "module signing: MODULE_SIGN_PRIV_KEY and MODULE_SIGN_PUB_KEY are passed" in log
    assert "all signed by the key of signing_key.x509" in log
    assert "not published: doca-extra-" in log

    repo = httpx.get(f"{service.url}/api/v1/repos/{build['repo_id']}", timeout=10).json()
    (version,) = [version for version in repo["versions"] if version["number"] == build["version_number"]]
    packages = set(version["packages"])
    assert not {name for name in packages if name.endswith("-dkms")}
    assert not packages & {"doca-extra", "doca-ofed-source", "doca-kernel-repo", "doca-host"}
    snippet = httpx.get(f"{service.url}/api/v1/repos/{repo['id']}/dib", timeout=10).json()
    pkglist = snippet["environment"]["DIB_MLNX_OFED_PKGLIST"]
    assert pkglist == f"doca-ofed-userspace {kernel_metapackage(kernel)} mlnx-fw-updater"
    definition = repo_definition(version["url"])
    assert "gpgcheck=1" in definition
    listed = dnf(tmp_path / "files", definition, "repoquery", "-q", "-l", "*").stdout.split()
    assert {path.split("/")[3] for path in listed if path.startswith("/lib/modules/")} == {kernel}
    offered = dnf(tmp_path / "files", definition, "repoquery", "-q", "--qf", "%{name}.%{arch} %{release}", "*")
    releases = dict(line.split() for line in offered.stdout.splitlines())
    assert len(releases) == len(offered.stdout.splitlines()), f"one package of each name and arch: {offered.stdout}"
    assert not [name for name in releases if "-debuginfo." in name or "-debugsource." in name], releases
    assert re.search(r"left out kmod-mlnx-ofa_kernel-debuginfo-\S+: debug symbols", log), log
    if not spec.dkms:  # the repository's own mlnx-ofa_kernel stands next to the rebuilt one: only the latter
        stock = "." + spec.tag.replace(".", "u")
        assert not releases[f"mlnx-ofa_kernel.{spec.arch}"].endswith(stock), releases
        assert re.search(rf"left out mlnx-ofa_kernel-\S+{stock}\S*: replaced by mlnx-ofa_kernel-", log), log

    for packages_to_install in (pkglist.split(), ["doca-ofed"]):  # the plain doca-ofed pulls no DKMS either
        root = tmp_path / packages_to_install[0]
        dnf(root, definition, "install", *packages_to_install)
        assert installed_kernels(root) == {kernel}
        (module,) = (root / "installroot" / "lib" / "modules" / kernel).rglob("mlx5_core.ko")
        assert module_vermagic(module) == kernel
        certificate = Path(service.environment["OFEDREPO_MODULE_SIGN_PUB_KEY"])
        assert signature_problem(module.read_bytes(), certificate) is None
        listing = dnf(root, definition, "list", "--installed").stdout
        named = {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}
        installed = {name.rsplit(".", 1)[0] for name in named}
        assert "kmod-mlnx-ofa_kernel" in installed and not {name for name in installed if "dkms" in name}, listing
    assert f"doca-ofed.{spec.arch}" in named, listing  # regenerated for the kernel, of its original's arch


def test_a_compile_failure_shows_its_component_log(service: RunningServer, inputs: Inputs) -> None:
    bundle = registered(service, inputs, DOCA_32, "online-tree")
    asked = request(service, kernel=BROKEN_KERNEL, bundle_id=bundle["id"])
    assert asked.status_code == 202, asked.text
    build = wait_for(service, asked.json()["build"]["id"], ENDED, timeout=300)
    log = build_log(service, build["id"])
    assert build["state"] == "failed" and COMPILER_ERROR in build["error"], build
    assert re.search(r"==> DOCA\.\w+/logs/mlnx-ofa_kernel\.log <==", log) and COMPILER_ERROR in log


def test_the_ga_kernel_of_a_31_repository_needs_no_rebuild(service: RunningServer, inputs: Inputs) -> None:
    bundle = registered(service, inputs, DOCA_31, "local-repo")
    asked = request(service, kernel=DOCA_31.ga_kernel, bundle_id=bundle["id"])
    assert asked.status_code == 202 and asked.json()["build"]["rebuild"] is False, asked.text
    build = wait_for(service, asked.json()["build"]["id"], ENDED, timeout=120)
    assert build["state"] == "succeeded", build_log(service, build["id"])
    repo = httpx.get(f"{service.url}/api/v1/repos/{build['repo_id']}/dib", timeout=10).json()
    assert repo["environment"]["DIB_MLNX_OFED_PKGLIST"] == "doca-ofed mlnx-fw-updater"


# The model's own behaviours, run as the sandboxed worker runs it.


def unpacked_tools(root: Path, inputs: Inputs, spec: DocaSpec) -> Path:
    """The spec's doca-kernel-support and driver sources, as they would install under /opt/mellanox/doca."""
    limits = Limits(10**10, 10_000)
    tree = inputs.trees[spec]
    workspace = Workspace(DataDir(root / "var").ensure(), limits, "upstream")
    with DocaOfed().register(tree, [str(tree)], workspace, None) as registration:
        packages = [registration.opened.root / registration.facts[key] for key in ("tool_package", "source_package")]
        return unpack_tools(sorted(set(packages)), root / "tools", limits)


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory, inputs: Inputs) -> Path:
    return unpacked_tools(tmp_path_factory.mktemp("doca-tools"), inputs, DOCA_32)


def run_tool(
    tools: Path, tmp: Path, sources: Path, *arguments: str, database: bool = True
) -> subprocess.CompletedProcess[str]:
    """The tool in the local runner's sandbox (its tools at /opt/mellanox/doca, ``tmp`` as /tmp, no network);
    ``database`` False hides the registered build dependencies (an empty /var/lib/rpm)."""
    tmp.mkdir(parents=True, exist_ok=True)
    command = ["bash", f"{TOOLS_PREFIX}/tools/doca-kernel-support", *arguments]
    argv = sandbox_argv(command, host_layout([]), [sources], [tmp], tmp, [(tools, TOOLS_PREFIX)], tmp)
    if not database:
        argv[argv.index("--chdir") : argv.index("--chdir")] = ["--tmpfs", "/var/lib/rpm"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=clean_environment(tmp))


def test_the_tool_model_behaves_as_nvidias(tools: Path, tmp_path: Path, prepared_builder: None) -> None:
    sources = make_kernel_sources(tmp_path / "kernels", KERNEL)
    # -k resolves through /lib/modules/<K>/build, which EL9's kernel-devel does not make.
    by_name = run_tool(tools, tmp_path / "k", sources, "-k", KERNEL)
    assert by_name.returncode == 1 and "Could not determine kernel version from source directory" in by_name.stdout
    # --kernel-source is declared without an argument: its directory is a stray argument.
    long_form = run_tool(tools, tmp_path / "long", sources, "--kernel-source", str(sources))
    assert long_form.returncode == 1 and "Usage: doca-kernel-support" in long_form.stdout
    # Missing build dependencies are installed with dnf, which fails with no network.
    offline = run_tool(tools, tmp_path / "offline", sources, "-s", str(sources), database=False)
    assert offline.returncode == 1 and "Installing missing build dependencies: createrepo" in offline.stdout
    assert "failed to install build dependencies" in offline.stdout
    # --dirty keeps the loose packages under packages/<K>/<component>/ beside the wrapper.
    dirty = run_tool(tools, tmp_path / "dirty", sources, "--dirty", "-s", str(sources))
    assert dirty.returncode == 0, dirty.stdout + dirty.stderr
    (top,) = (tmp_path / "dirty").glob("DOCA.*")
    assert f"Building under /tmp/{top.name}" in dirty.stdout
    assert sorted(path.name for path in (top / "packages" / KERNEL).iterdir())[:2] == ["iser", "isert"]
    (wrapper,) = top.glob("doca-kernel-repo-*.rpm")
    assert wrapper.name == f"doca-kernel-repo-25.10.1.2.8.0-1.kver.{kernel_metapackage(KERNEL)[12:]}.x86_64.rpm"
    kmods = sorted(path.name for path in (top / "packages" / KERNEL / "iser").glob("kmod-iser*.rpm"))
    release = f"25.10-OFED.25.10.1.2.8.0.1.1.{dist_of_this_host()}.x86_64.rpm"  # .1: above stock
    assert kmods == [f"kmod-iser-{release}", f"kmod-iser-debuginfo-{release}"]  # debug packages in the harvest
    # The kernel's version is what `make kernelrelease` says in the tree, not the directory's name.
    renamed = tmp_path / "renamed"
    shutil.copytree(sources, renamed)
    by_make = run_tool(tools, tmp_path / "by-make", renamed, "-s", str(renamed), "-d")
    assert f"for kernel {KERNEL} " in by_make.stdout, by_make.stdout


def dist_of_this_host() -> str:
    """The KMP dist tag the tool makes from /etc/os-release (``rhel9u6`` on RHEL 9.6)."""
    values = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return values["ID"].strip('"') + values.get("VERSION_ID", "").strip('"').replace(".", "u")


def _header_string(data: bytearray, tag: int) -> tuple[int, int]:
    """Where the main header stores the string value of ``tag`` (start, end): after the lead (96 bytes) come the
    signature header and the main header, each ``8e ad e8 01``, 4 reserved bytes, the index count and the data
    size, then 16-byte index entries (tag, type, offset, count) and the data store."""
    magic = b"\x8e\xad\xe8\x01"
    main = data.index(magic, data.index(magic) + 1)
    count = int.from_bytes(data[main + 8 : main + 12], "big")
    store = main + 16 + 16 * count
    for index in range(count):
        entry = main + 16 + 16 * index
        if int.from_bytes(data[entry : entry + 4], "big") == tag:
            start = store + int.from_bytes(data[entry + 8 : entry + 12], "big")
            return start, data.index(b"\0", start)
    raise AssertionError(f"no tag {tag}")


def _damaged(package: Path, directory: Path, how: str) -> Path:
    """``package`` with its header or payload damaged as a hostile upload would be."""
    data = bytearray(package.read_bytes())
    if how == "an unknown payload compressor":
        start, end = _header_string(data, 1125)  # RPMTAG_PAYLOADCOMPRESSOR
        data[start:end] = b"z" * (end - start)
    elif how == "no payload compressor":  # the index entry of PAYLOADCOMPRESSOR renamed to a tag rpm does not know
        entry = (1125).to_bytes(4, "big") + (6).to_bytes(4, "big")
        assert data.count(entry) == 1
        data[data.index(entry) : data.index(entry) + 4] = (5999).to_bytes(4, "big")
    elif how == "64 bytes flipped mid-payload":
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(byte ^ 0xFF for byte in data[middle : middle + 64])
    else:  # a payload member the header does not list: renamed in the (uncompressed) header only
        name = b"RPM-GPG-KEY-doca"
        assert name in data
        data[data.index(name) : data.index(name) + len(name)] = b"RPM-GPG-KEY-docX"
    damaged = directory / f"{how.replace(' ', '-')}-{package.name}"
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.parametrize(
    "how", ["an unknown payload compressor", "64 bytes flipped mid-payload", "member not in header"]
)
def test_a_damaged_local_repo_package_is_a_422_with_a_detail(
    service: RunningServer, inputs: Inputs, tmp_path: Path, how: str
) -> None:
    """Each of these was a 500 (one of them plain text): librpm's errors escaped as they were."""
    answer = upload(service, "bundles", _damaged(inputs.local_repos[DOCA_31], tmp_path, how))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/json") and answer.json()["detail"]


def test_a_local_repo_package_that_does_not_name_its_compressor_is_read_as_rpm_reads_it(
    service: RunningServer, inputs: Inputs, tmp_path: Path
) -> None:
    """No PAYLOADCOMPRESSOR was a plain-text 500; rpm takes such a payload for gzip, as this fixture's is."""
    answer = upload(service, "bundles", _damaged(inputs.local_repos[DOCA_31], tmp_path, "no payload compressor"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == DOCA_31.name


def test_ofedrepo_publish_takes_doca_kernel_support_output(
    service: RunningServer, inputs: Inputs, tools: Path, tmp_path: Path, prepared_builder: None
) -> None:
    """A rebuild done by hand on a build host (the tool's wrapper package, or the ``Modules/<K>/`` directory it
    installs) is published with the registered DOCA repository's userspace packages, and installs."""
    registered(service, inputs, DOCA_32, "online-tree")
    kernel = "5.14.0-570.44.1.el9_6.x86_64"
    sources = make_kernel_sources(tmp_path / "kernels", kernel)
    built = run_tool(tools, tmp_path / "tmp", sources, "-s", str(sources))
    assert built.returncode == 0, built.stdout + built.stderr
    (wrapper,) = (tmp_path / "tmp").glob("DOCA.*/doca-kernel-repo-*.rpm")

    def publish(path: Path) -> dict:
        done = subprocess.run(
            [str(VENV_BIN / "ofedrepo"), "publish", str(path), "--json"],
            env=service.environment, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    published = publish(wrapper)
    assert (published["bundle"], published["kernel"], published["version"]) == (DOCA_32.name, kernel, 1)
    repo = httpx.get(f"{service.url}/api/v1/repos/{published['repo_id']}", timeout=10).json()
    definition = repo_definition(repo["versions"][-1]["url"])
    root = tmp_path / "installed"
    dnf(root, definition, "install", "doca-ofed-userspace", kernel_metapackage(kernel))
    assert installed_kernels(root) == {kernel}

    # The directory the wrapper installs, /usr/share/doca-host-<ver>/Modules/<K>/, is taken too.
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(f"rpm2cpio {wrapper} | cpio -idm --quiet", shell=True, cwd=unpacked, check=True)
    (modules,) = unpacked.glob("usr/share/doca-host-*/Modules/*")
    assert publish(modules)["version"] in (1, 2)

    # A kernel whose distro cannot be told: which repository's userspace goes with it is not guessed.
    unknown = unpacked / "usr" / "share" / modules.parent.parent.name / "Modules" / "6.1.0-13.fc.x86_64"
    shutil.copytree(modules, unknown)
    refused = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "publish", str(unknown)], env=service.environment, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "cannot tell which distro 6.1.0-13.fc.x86_64 is for" in refused.stderr
    # A repository's own package is not a tool's output: it says what to do with it instead.
    repository = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "publish", str(inputs.local_repos[DOCA_32])], env=service.environment,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert repository.returncode != 0 and "is a doca-host package" in repository.stderr, repository.stderr
    assert "ofedrepo bundle add" in repository.stderr

    # Without the DOCA release it was built from registered, it is refused in one line.
    other = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "publish", str(wrapper)],
        env={**service.environment, "OFEDREPO_DATA_DIR": str(tmp_path / "elsewhere")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert other.returncode != 0 and "registered DOCA repository" in other.stderr, other.stderr
    assert "Traceback" not in other.stderr


def test_a_31_wrapper_publishes_for_the_kernel_it_names_whatever_its_file_is_called(
    service: RunningServer, inputs: Inputs, tmp_path: Path, prepared_builder: None
) -> None:
    """A 3.1 repository holds the GA kernel's kmods too, so its packages alone do not say which kernel a rebuild
    is for: the wrapper's ``Modules/<K>/`` does. A download keeps no file name: the header says what it is."""
    registered(service, inputs, DOCA_31, "online-tree")
    kernel = "5.14.0-570.46.1.el9_6.x86_64"
    sources = make_kernel_sources(tmp_path / "kernels", kernel)
    built = run_tool(unpacked_tools(tmp_path, inputs, DOCA_31), tmp_path / "tmp", sources, "-s", str(sources))
    assert built.returncode == 0, built.stdout + built.stderr
    (wrapper,) = (tmp_path / "tmp").glob("DOCA.*/doca-kernel-repo-*.rpm")
    download = tmp_path / "download.rpm"
    shutil.copyfile(wrapper, download)
    done = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "publish", str(download), "--json"],
        env=service.environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    published = json.loads(done.stdout)
    assert (published["bundle"], published["kernel"]) == (DOCA_31.name, kernel)


def test_the_same_tree_under_a_path_naming_another_release_is_refused(service: RunningServer, inputs: Inputs) -> None:
    """Its checksum finds the registered repository; the path it came by must still agree with it."""
    registered(service, inputs, DOCA_31, "online-tree")
    renamed = inputs.root / "renamed" / "doca" / "3.2.0" / DOCA_31.tag / DOCA_31.arch
    if not renamed.exists():
        shutil.copytree(inputs.trees[DOCA_31], renamed, symlinks=True)
    answer = httpx.post(f"{service.url}/api/v1/bundles", json={"path": str(renamed)}, timeout=120)
    assert answer.status_code == 422, answer.text
    assert f"registered as {DOCA_31.name}, but its path names doca/3.2.0/" in answer.json()["detail"]
