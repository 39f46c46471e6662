"""Pure parts of the build pipeline: bundle choice, builder identity, command lines, module checks."""

import lzma
from pathlib import Path

import pytest

from ofedrepo.builds.mirrors import LOCATION_REFUSED, MirrorRefused, safe_href
from ofedrepo.builds.requests import builder_fingerprint, choose_bundle, container_image
from ofedrepo.bundles.mlnx_ofed import add_kernel_support_argv
from ofedrepo.config import Settings
from ofedrepo.distro import ofed_distro_for_kernel
from ofedrepo.errors import BuildFailed, InvalidInput
from ofedrepo.kernel import devel_package_names, parse_kernel_release, release_of_package
from ofedrepo.kinds import BundleKind
from ofedrepo.models import Bundle
from ofedrepo.repos import verify
from ofedrepo.repos.verify import vermagic
from synthetic.vendor.kmod import kernel_module
from workers.runner import (
    CONTAINER_ID_RANGE,
    HostLayout,
    container_argv,
    container_kill_argv,
    first_error,
    sandbox_argv,
)
from workers.sandbox import STAGE, Confinement, RunCgroup, confined_argv, staged_sources

KERNEL = "4.18.0-372.26.1.el8_6.x86_64"
CONFINED = Confinement(uid=2_000_000_000, max_processes=512, max_memory=4 * 1024**3, max_scratch=10 * 1024**3)


def bundle(bundle_id: int, version: str, distro: str = "rhel8.6", arch: str = "x86_64") -> Bundle:
    return Bundle(
        id=bundle_id, name=f"MLNX_OFED_LINUX-{version}-{distro}-{arch}", ofed_version=version, distro=distro,
        arch=arch, sha256=f"{bundle_id:064x}", kind=BundleKind.MLNX_OFED,
    )  # fmt: skip


def settings(**values: object) -> Settings:
    return Settings(data_dir=Path("/nonexistent"), **values)  # type: ignore[arg-type]


BUNDLES = [
    bundle(1, "5.8-3.0.7.0"),
    bundle(2, "5.10-1.0.2.0"),  # newer than 5.8 although it sorts before it as text
    bundle(3, "23.10-1.1.9.0", distro="rhel9.2"),
    bundle(4, "5.8-3.0.7.0", arch="aarch64"),
]


def test_the_newest_fitting_bundle_is_chosen() -> None:
    assert choose_bundle(BUNDLES, "rhel8.6", "x86_64", None).id == 2
    assert choose_bundle(BUNDLES, "rhel8.6", "x86_64", "5.8-3.0.7.0").id == 1
    assert choose_bundle(BUNDLES, "rhel8.6", "aarch64", None).id == 4


def test_a_uek_kernel_gets_the_newest_oracle_linux_bundle_of_its_major() -> None:
    oracle = [bundle(6, "5.8-3.0.7.0", distro="ol8.6"), bundle(7, "5.8-3.0.7.0", distro="ol8.10"),
              bundle(8, "5.8-3.0.7.0", distro="ol9.2")]  # fmt: skip
    distro = ofed_distro_for_kernel(parse_kernel_release("5.4.17-2136.307.3.1.el8uek.x86_64"))
    assert distro is not None and choose_bundle([*BUNDLES, *oracle], distro.tag, "x86_64", None).id == 7


def test_nothing_fitting_lists_the_candidates() -> None:
    with pytest.raises(InvalidInput, match="no MLNX_OFED bundle or DOCA-OFED repository fits") as raised:
        choose_bundle(BUNDLES, "rhel7.9", "x86_64", None)
    assert "rhel7.9 x86_64" in str(raised.value) and "MLNX_OFED_LINUX-23.10-1.1.9.0-rhel9.2-x86_64 (id 3)" in str(
        raised.value
    )
    with pytest.raises(InvalidInput, match="none registered"):
        choose_bundle([], "rhel8.6", "x86_64", None)


def test_two_bundles_of_one_version_are_a_tie_to_resolve_by_id() -> None:
    with pytest.raises(InvalidInput, match='pass "bundle_id"') as raised:
        choose_bundle([*BUNDLES, bundle(5, "5.10-1.0.2.0")], "rhel8.6", "x86_64", None)
    assert "id 2" in str(raised.value) and "id 5" in str(raised.value)


def test_container_images_prefer_the_exact_tag() -> None:
    configured = settings(build_container_images={"rhel8": "rocky:8", "rhel8.6": "rocky:8.6"})
    assert container_image(configured, "rhel8.6") == "rocky:8.6"
    assert container_image(configured, "rhel8.8") == "rocky:8"
    with pytest.raises(InvalidInput, match="rhel9=<image>"):
        container_image(configured, "rhel9.2")


def test_the_builder_fingerprint_changes_with_what_changes_the_output() -> None:
    local = builder_fingerprint(settings(), "rhel8.6")
    assert local == builder_fingerprint(settings(), "rhel8.8")  # the local runner does not depend on the distro
    podman = builder_fingerprint(settings(build_runner="podman"), "rhel8.6")
    other_image = builder_fingerprint(
        settings(build_runner="podman", build_container_images={"rhel8": "elsewhere/rocky:8"}), "rhel8.6"
    )
    assert len({local, podman, other_image}) == 3


def test_the_vendor_command_line() -> None:
    argv = add_kernel_support_argv(Path("/b/MLNX"), KERNEL, Path("/usr/src/kernels/K"), Path("/t/out"), "rhel8.6")
    assert argv == [
        "bash", "/b/MLNX/mlnx_add_kernel_support.sh", "-m", "/b/MLNX", "-k", KERNEL, "-s", "/usr/src/kernels/K",
        "--make-tgz", "-t", "/t/out", "-y", "--skip-repo", "--distro", "rhel8.6",
    ]  # fmt: skip


def test_the_container_command_line_mounts_inputs_read_only_and_has_no_network() -> None:
    command = ["bash", "/b/MLNX/mlnx_add_kernel_support.sh", "-k", KERNEL]
    argv = container_argv(
        "podman", "rocky:8", "ofedrepo-build-7", command, [Path("/b/MLNX"), Path("/src/K")], Path("/w"), Path("/w/h"),
        CONFINED, max_seconds=7260,
    )  # fmt: skip
    assert argv[:5] == ["podman", "run", "--rm", "--name", "ofedrepo-build-7"]
    assert "--network=none" in argv
    assert "--timeout=7260" in argv  # no life past the build's deadline, were its worker killed
    assert ["-v", "/b/MLNX:/b/MLNX:ro"] == argv[
        argv.index("/b/MLNX:/b/MLNX:ro") - 1 : argv.index("/b/MLNX:/b/MLNX:ro") + 1
    ]
    assert "/src/K:/src/K:ro" in argv and "/w:/w:rw" in argv and "HOME=/w/h" in argv
    assert argv[-len(command) - 1 :] == ["rocky:8", *command]
    assert container_kill_argv("docker", "ofedrepo-build-7") == ["docker", "rm", "--force", "ofedrepo-build-7"]
    assert container_kill_argv("podman", "b") == ["podman", "rm", "--force", "--time", "0", "--ignore", "b"]


@pytest.mark.parametrize("path", ["/data/we:ird", "/data/a,b"])
def test_paths_that_would_break_a_mount_option_are_refused(path: str) -> None:
    with pytest.raises(BuildFailed, match="cannot mount"):
        container_argv("docker", "img", "n", ["true"], [Path(path)], Path("/w"), Path("/w/h"), CONFINED)


def test_vermagic_is_read_from_the_modinfo_section() -> None:
    assert vermagic(kernel_module("mlx5_core", KERNEL)) == f"{KERNEL} SMP mod_unload modversions "
    assert vermagic(b"\x7fELF not really") is None
    assert vermagic(kernel_module("x", KERNEL).replace(b"vermagic=", b"vermagix=")) is None


def test_devel_packages_per_kernel_flavour() -> None:
    def names(kernel: str) -> list[str]:
        return devel_package_names(parse_kernel_release(kernel))

    assert names(KERNEL) == ["kernel-devel"]
    assert names("5.15.0-101.103.2.1.el8uek.x86_64")[0] == "kernel-uek-devel"
    assert names("4.18.0-372.9.1.rt7.166.el8.x86_64")[0] == "kernel-rt-devel"
    assert names("5.14.0-362.8.1.el9_3.x86_64+rt") == ["kernel-rt-devel"]
    assert names("5.14.0-362.8.1.el9_3.aarch64+64k") == ["kernel-64k-devel"]
    assert names("5.14.0-362.8.1.el9_3.x86_64+debug") == ["kernel-debug-devel"]
    assert names("5.14.0-362.8.1.el9_3.x86_64+rt-debug") == ["kernel-rt-debug-devel"]
    # Older generations' names: EL7's debug kernel, EL8's RT debug kernel, Oracle's 64k-page UEK.
    assert names("3.10.0-1160.119.1.el7.x86_64.debug") == ["kernel-debug-devel"]
    assert names("4.18.0-353.rt7.138.el8.x86_64+debug") == ["kernel-rt-debug-devel"]
    assert names("5.15.0-100.96.32.el9uek.aarch64.64k") == ["kernel-uek64k-devel"]
    assert names("5.15.0-100.96.32.el9uek.x86_64.debug") == ["kernel-uek-debug-devel"]
    assert names("5.15.0-100.96.32.el9uek.aarch64.64kdebug") == ["kernel-uek64kdebug-devel"]


#: (package, version, release, arch) → the ``uname -r`` it installs sources for, each generation's way.
PACKAGE_KERNELS = [
    (("kernel-rt-devel", "5.14.0", "362.8.1.el9_3", "x86_64"), "5.14.0-362.8.1.el9_3.x86_64+rt"),
    (("kernel-64k-devel", "5.14.0", "362.8.1.el9_3", "aarch64"), "5.14.0-362.8.1.el9_3.aarch64+64k"),
    (("kernel-rt-devel", "4.18.0", "513.5.1.rt7.307.el8_9", "x86_64"), "4.18.0-513.5.1.rt7.307.el8_9.x86_64"),
    (("kernel-devel", "5.14.0", "362.8.1.el9_3", "x86_64"), "5.14.0-362.8.1.el9_3.x86_64"),
    (("kernel-rt-debug-devel", "5.14.0", "362.8.1.el9_3", "x86_64"), "5.14.0-362.8.1.el9_3.x86_64+rt-debug"),
    (("kernel-debug-devel", "3.10.0", "1160.119.1.el7", "x86_64"), "3.10.0-1160.119.1.el7.x86_64.debug"),
    (("kernel-rt-debug-devel", "4.18.0", "353.rt7.138.el8", "x86_64"), "4.18.0-353.rt7.138.el8.x86_64+debug"),
    (("kernel-uek64k-devel", "5.15.0", "100.96.32.el9uek", "aarch64"), "5.15.0-100.96.32.el9uek.aarch64.64k"),
    (("kernel-uek-debug-devel", "5.15.0", "100.96.32.el9uek", "x86_64"), "5.15.0-100.96.32.el9uek.x86_64.debug"),
    (("kernel-uek64kdebug-devel", "5.15.0", "100.96.32.el9uek", "aarch64"),
     "5.15.0-100.96.32.el9uek.aarch64.64kdebug"),
    (("kernel-rt-debug-devel", "3.10.0", "1160.rt56.1131.el7", "x86_64"), "3.10.0-1160.rt56.1131.el7.x86_64.debug"),
]  # fmt: skip


@pytest.mark.parametrize(("package", "uname"), PACKAGE_KERNELS)
def test_the_kernel_a_package_is_for_carries_its_flavour(package: tuple[str, str, str, str], uname: str) -> None:
    """EL9's kernel-rt-devel installs /usr/src/kernels/<K>+rt; EL8's says .rt7. in its release instead; EL7 and
    UEK write their flavours with a dot. Each kernel parses back with its arch, and asks for that package."""
    assert release_of_package(*package) == uname
    parsed = parse_kernel_release(uname)
    assert parsed.arch == package[3]
    assert package[0] in devel_package_names(parsed)


@pytest.mark.parametrize("href", ["/etc/passwd", "../x.rpm", "Packages/../../x.rpm", "http://evil/x.rpm", "", "a\\b"])
def test_repository_locations_cannot_escape(href: str) -> None:
    with pytest.raises(MirrorRefused, match=LOCATION_REFUSED):
        safe_href(href)


def test_plain_repository_locations_pass() -> None:
    assert safe_href("Packages/k/kernel-devel.rpm") == "Packages/k/kernel-devel.rpm"


def test_the_container_gets_the_module_signing_keys_read_only_by_environment() -> None:
    keys = {"MODULE_SIGN_PRIV_KEY": "/keys/signing_key.pem", "MODULE_SIGN_PUB_KEY": "/keys/signing_key.x509"}
    argv = container_argv(
        "podman", "img", "n", ["true"], [Path("/b"), Path("/keys/signing_key.pem")], Path("/w"), Path("/w/h"),
        CONFINED, keys,
    )  # fmt: skip
    assert "/keys/signing_key.pem:/keys/signing_key.pem:ro" in argv
    assert "MODULE_SIGN_PRIV_KEY=/keys/signing_key.pem" in argv and argv.index("img") > argv.index("-e")


def test_the_container_has_no_capability_and_its_limits() -> None:
    argv = container_argv("podman", "img", "n", ["true"], [Path("/b")], Path("/w"), Path("/w/h"), CONFINED)
    before_image = argv[: argv.index("img")]
    assert {"--cap-drop=ALL", "--read-only", "--pids-limit=512", f"--memory={4 * 1024**3}"} <= set(before_image)
    assert ["--security-opt", "no-new-privileges"] == before_image[before_image.index("no-new-privileges") - 1 :][:2]
    mapping = f"0:2000000000:{CONTAINER_ID_RANGE}"
    assert ["--uidmap", mapping, "--gidmap", mapping] == before_image[before_image.index("--uidmap") :][:4]
    docker = container_argv("docker", "img", "n", ["true"], [Path("/b")], Path("/w"), Path("/w/h"), CONFINED)
    assert "--uidmap" not in docker and "--cap-drop=ALL" in docker  # docker maps no ids per container
    rootless = Confinement(uid=None, max_processes=512, max_memory=4 * 1024**3, max_scratch=10 * 1024**3)
    assert "--uidmap" not in container_argv("podman", "img", "n", ["true"], [], Path("/w"), Path("/w/h"), rootless)


def test_the_confinement_chain_joins_its_cgroup_stages_sources_then_drops_to_the_sandbox_uid() -> None:
    cgroup = RunCgroup([Path("/cg/pids/ofedrepo/b"), Path("/cg/memory/ofedrepo/b")], counts_processes=True)
    staged = staged_sources([Path("/data/bundles/s/B"), Path("/data/work/w"), Path("/data/bundles/s/B")])
    assert staged == {Path("/data/bundles/s/B"): f"{STAGE}/0", Path("/data/work/w"): f"{STAGE}/1"}
    argv = confined_argv(["bwrap", "x"], CONFINED, cgroup, staged)
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    tail = argv[argv.index("prlimit") :]
    assert tail[:5] == ["prlimit", f"--as={4 * 1024**3}", f"--fsize={10 * 1024**3}", "--core=0", "--"]
    assert "--nproc" not in " ".join(tail)  # the cgroup counts processes
    setpriv = tail[tail.index("setpriv") :]
    assert setpriv[:5] == ["setpriv", "--reuid=2000000000", "--regid=2000000000", "--clear-groups", "--no-new-privs"]
    assert argv[-2:] == ["bwrap", "x"]
    assert argv.index("/cg/pids/ofedrepo/b/cgroup.procs") < argv.index("/data/bundles/s/B") < argv.index("prlimit")
    without = confined_argv(["bwrap"], CONFINED, None, {})
    assert without[0] == "prlimit" and any(argument.startswith("--nproc=") for argument in without)


def test_the_first_compiler_error_is_what_a_failure_reports() -> None:
    lines = [
        'ERROR: Failed executing "install.pl"',
        "  CC [M]  obj/default/mlx5_core.o",
        "main.c:12:3: error: implicit declaration of function 'foo'",
        "error: Bad exit status from /var/tmp/rpm-tmp.x (%build)",
    ]
    assert first_error(lines) == "main.c:12:3: error: implicit declaration of function 'foo'"
    assert first_error(lines[-1:]) is None


def test_a_compressed_module_that_would_unpack_past_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few KB of xz claiming far more: decompression stops at the cap instead of filling memory."""
    monkeypatch.setattr(verify, "MAX_MODULE_BYTES", 1024 * 1024)
    bomb = lzma.compress(bytes(64 * 1024 * 1024), preset=1)
    assert len(bomb) < 100_000
    with pytest.raises(BuildFailed, match="decompresses to more than 1048576 bytes"):
        verify._module_bytes("mlx5_core.ko.xz", bomb)
    assert verify._module_bytes("small.ko.xz", lzma.compress(b"\x7fELF")) == b"\x7fELF"
    with pytest.raises(BuildFailed, match="not a readable xz stream"):
        verify._module_bytes("broken.ko.xz", b"not xz")


def test_the_local_sandbox_shows_the_toolchain_the_inputs_and_the_scratch_only() -> None:
    layout = HostLayout(top_links={"bin": "usr/bin", "lib": "usr/lib"}, top_dirs=["opt"], masked=["/etc/shadow"])
    argv = sandbox_argv(["bash", "/b/x.sh"], layout, [Path("/data/bundles/s/B"), Path("/usr/src/kernels/K")],
                        [Path("/data/work/build-1")], Path("/data/work/build-1"),
                        staged={Path("/data/work/build-1"): f"{STAGE}/3"})  # fmt: skip
    assert argv[0] == "bwrap" and argv[-3:] == ["--", "bash", "/b/x.sh"]
    assert {"--unshare-net", "--unshare-pid", "--die-with-parent", "--disable-userns", "--unshare-cgroup-try"} <= set(
        argv
    )
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--unshare-user", "--uid", "0") in pairs and ("--cap-drop", "ALL", "--unshare-pid") in pairs
    assert ("--bind", f"{STAGE}/3", "/data/work/build-1") in pairs  # found where it was staged, mounted at its path
    assert ("--ro-bind", "/data/bundles/s/B", "/data/bundles/s/B") in pairs
    assert ("--ro-bind", "/dev/null", "/etc/shadow") in pairs and ("--symlink", "usr/bin", "/bin") in pairs
    assert ("--remount-ro", "/dev", "--proc") in pairs  # its own /proc: no other process's environment
    assert argv[-7:-5] == ["--remount-ro", "/"]  # the sandbox's own root, once every mount point is made
    assert ("--size", str(512 * 1024**2), "--tmpfs") in pairs  # a tmpfs is memory: bounded
    binds = [(option, source) for option, source, _ in pairs if option in ("--bind", "--ro-bind")]
    assert not [bind for bind in binds if bind[1] in ("/data", "/")]  # never the whole data dir or host
