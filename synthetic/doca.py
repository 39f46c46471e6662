"""Synthetic DOCA-OFED (DOCA-Host) repositories with NVIDIA's layout, built with real rpmbuild (tests only).

Every generation the public sources show is modelled (``GENERATIONS``), as NVIDIA publishes them::

    doca/<ver>/<distro>/<arch>/             the online tree (<distro> a minor, rhel9.6, up to 3.1; rhel9 from 3.2:
                                            helper-read linux.mellanox.com URLs in confluent-docs, kayobe-config)
        *.rpm  repodata/  RPM-GPG-KEY-doca
    doca-host-<ver>-<build>_<ofed>_<distro>.<arch>.rpm
                                            the local-repo package (``doca-host-2.10.0-093000_25.01_rhel95.x86_64
                                            .rpm``, xcat2/confluent-docs ``doca2-10-install.md``): /usr/share/
                                            doca-host-<ver>/repo/ (Packages/, repodata/, RPM-GPG-KEY-doca) and
                                            /etc/yum.repos.d/doca.repo

Packages, all signed with the throwaway vendor key: the userspace stack; up to DOCA 3.1 KMP ``kmod-*`` built
for the GA kernel of the RHEL minor (release ``OFED.<v>.rhel9u6``), from 3.2 only ``*-dkms`` packages; the
DOCA metapackages (``doca-ofed``, ``doca-roce``, ``doca-kernel`` as arch packages, ``doca-networking``,
``doca-all`` and the ``-userspace`` variants noarch), versioned ``<doca>-<build>``: dnf fetches
``doca-kernel-3.1.0-091000.x86_64.rpm`` from the 3.1.0 rhel9.6 repository (a public how-to,
schmaustech/ufm-install-rhel9); ``doca-extra`` with the model of ``doca-kernel-support``
(``synthetic/vendor/doca_kernel_support.py``); the driver sources ``MLNX_OFED_SRC-<ofed>.tgz`` (the kernel
source packages the tool rebuilds) and ``get_mlnx_ofed_version``: inside ``doca-extra`` up to DOCA 3.1 (3.1.0's
``doca-extra`` "bundled the tarball inside doca-extra itself", rollandf/doca-driver-build
``docs/install-pl-deprecation-plan.md`` B.1.1, which calls ``doca-ofed-source`` a later split; for 2.10 and 3.0
no source shows the packages' contents, so the older layout is assumed), in ``doca-ofed-source`` from 3.2.
DOCA↔OFED pairs from Mellanox/doca-driver-build ``release_manifests/`` and its README.
"""

import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from synthetic.bundle import (
    COMMON_USERSPACE,
    COMPONENTS,
    VENDOR,
    TestKey,
    build_userspace,
    kernel_spec,
    make_kernel_sources,
    run,
    sign,
)
from synthetic.vendor import install_pl, mlnxofedinstall

TOOLS = "/opt/mellanox/doca/tools"
#: What doca-ofed-userspace installs: the userspace stack, no kernel package.
USERSPACE = [*mlnxofedinstall.LIBRARIES["upstream"], "mlnx-tools", "mstflint", "perftest", "ucx", "mlnx-fw-updater"]


@dataclass(frozen=True)
class DocaSpec:
    doca_version: str
    build: str
    ofed_version: str
    distro: str
    """As the ``doca-host`` package's release writes it (``rhel96``; a major alone, ``rhel9``, from 3.2)."""
    tag: str
    """The distro as ofedrepo (and the online tree's directory) writes it: ``rhel9.6``, ``rhel9``."""
    ga_kernel: str
    arch: str = "x86_64"
    dkms: bool = False
    """DOCA 3.2 and later: no prebuilt kernel modules, only DKMS packages."""
    sources_in_extra: bool = True
    """Up to DOCA 3.1 the driver sources are inside ``doca-extra``; from 3.2 in ``doca-ofed-source``."""
    tool_sets_dist: bool = True
    """Whether doca-kernel-support's rpmbuild defines ``_dist`` (from /etc/os-release, as the 26.07 tool does:
    rollandf/doca-driver-build deprecation plan §11.6). DOCA 2.10 and 3.0 define none: xcat2/confluent-docs
    ``doca3-0-install.md`` patches the line to add ``--define "_dist .rhel9u5"``, because without it the rebuilt
    ``mlnx-ofa_kernel-devel`` and ``-source`` sort below the repository's and are "down-leveled"."""

    @property
    def ofed_short(self) -> str:
        return self.ofed_version.split("-")[0]

    @property
    def release(self) -> str:
        """The metapackages' release: the build number alone."""
        return self.build

    @property
    def local_repo_release(self) -> str:
        return f"{self.build}_{self.ofed_short}_{self.distro}"

    @property
    def name(self) -> str:
        """The name ofedrepo gives the bundle."""
        return f"DOCA_HOST-{self.doca_version}-{self.ofed_version}-{self.tag}-{self.arch}"

    @property
    def local_repo_file(self) -> str:
        return f"doca-host-{self.doca_version}-{self.local_repo_release}.{self.arch}.rpm"


DOCA_210 = DocaSpec(
    "2.10.0", "093000", "25.01-0.6.0.0", "rhel95", "rhel9.5", "5.14.0-503.11.1.el9_5.x86_64", tool_sets_dist=False
)
DOCA_30 = DocaSpec(
    "3.0.0", "058000", "25.04-0.6.1.0", "rhel95", "rhel9.5", "5.14.0-503.11.1.el9_5.x86_64", tool_sets_dist=False
)
DOCA_31 = DocaSpec("3.1.0", "091000", "25.07-0.9.7.0", "rhel96", "rhel9.6", "5.14.0-570.12.1.el9_6.x86_64")
DOCA_32 = DocaSpec(
    "3.2.0",
    "125000",
    "25.10-1.2.8.0",
    "rhel9",
    "rhel9",
    "5.14.0-611.5.1.el9_7.x86_64",
    dkms=True,
    sources_in_extra=False,
)
GENERATIONS = (DOCA_210, DOCA_30, DOCA_31, DOCA_32)


def payload_package(
    work: Path, name: str, version: str, release: str, arch: str, stage: Path, requires: list[str] | None = None
) -> Path:
    """A package whose payload is ``stage``'s tree, as it would install (rpmbuild, one spec)."""
    top = work / f"payload-{name}"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / f"{name}.spec"
    roots = sorted(f"/{path.relative_to(stage)}" for path in stage.iterdir())
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: synthetic {name}\nLicense: Proprietary\n"
        f"Vendor: NVIDIA\nAutoReqProv: no\n"
        + "".join(f"Requires: {requirement}\n" for requirement in requires or [])
        + f"\n%description\nSynthetic {name} for ofedrepo tests.\n\n%install\ncp -a {stage}/. %{{buildroot}}/\n\n"
        + "%files\n"
        + "".join(f"{root}\n" for root in roots)
    )
    run(install_pl.rpmbuild_argv(top, "-bb", "--target", arch, str(spec)), work / "build.log")
    (built,) = (top / "RPMS").rglob("*.rpm")
    return built


#: The profiles NVIDIA ships as arch packages; the others are noarch.
ARCH_METAPACKAGES = ("doca-ofed", "doca-roce", "doca-kernel")


def _metapackages(spec: DocaSpec, kernel_packages: list[str], work: Path, out: Path) -> None:
    """The DOCA profiles: packages of requirements only, version the DOCA release, release the build number."""
    groups = {
        "doca-ofed-userspace": USERSPACE + ["mlnx-ofa_kernel"],
        "doca-kernel": kernel_packages,
        "doca-roce-userspace": mlnxofedinstall.LIBRARIES["upstream"],
        "doca-roce": ["doca-roce-userspace", kernel_packages[0]],
        "doca-networking-userspace": ["doca-ofed-userspace", "mlnx-iproute2", "mlnx-ethtool"],
        "doca-networking": ["doca-networking-userspace", "doca-kernel"],
        "doca-all-userspace": ["doca-networking-userspace", "doca-roce-userspace"],
        "doca-all": ["doca-networking", "doca-roce"],
    }
    top = work / "metapackages"
    (top / "SPECS").mkdir(parents=True)
    lines = [
        "Name: doca-ofed", f"Version: {spec.doca_version}", f"Release: {spec.release}", "Summary: DOCA-OFED profile",
        "License: Proprietary", "Requires: doca-ofed-userspace", "Requires: doca-kernel",
        "", "%description", "doca-ofed profile.", "", "%files",
    ]  # fmt: skip
    for group, requires in groups.items():
        lines += ["", f"%package -n {group}", f"Summary: DOCA profile {group}"]
        lines += [] if group in ARCH_METAPACKAGES else ["BuildArch: noarch"]
        lines += [f"Requires: {name}" for name in requires]
        lines += [f"%description -n {group}", f"{group} profile.", f"%files -n {group}"]
    spec_file = top / "SPECS" / "doca.spec"
    spec_file.write_text("\n".join(lines) + "\n")
    run(install_pl.rpmbuild_argv(top, "-bb", "--target", spec.arch, str(spec_file)), work / "build.log")
    for package in (top / "RPMS").rglob("*.rpm"):
        shutil.move(package, out / package.name)


def _dkms_packages(spec: DocaSpec, work: Path, out: Path) -> list[str]:
    """``<component>-dkms`` (noarch, the sources for DKMS to build at install time), as DOCA 3.2 ships them."""
    top = work / "dkms"
    (top / "SPECS").mkdir(parents=True)
    names = [f"{component.name}-dkms" for component in COMPONENTS]
    lines = [
        f"Name: {names[0]}", f"Version: {spec.ofed_short}", f"Release: OFED.{spec.ofed_version.replace('-', '.')}.1",
        "Summary: DKMS sources", "License: GPLv2", "BuildArch: noarch", "Requires: dkms, gcc, make, kernel-devel",
        "", "%description", "DKMS sources.",
    ]  # fmt: skip
    install = ["%install"]
    for index, name in enumerate(names):
        if index:
            lines += ["", f"%package -n {name}", "Summary: DKMS sources", "Requires: dkms, gcc, make, kernel-devel"]
            lines += [f"%description -n {name}", "DKMS sources."]
        lines += [f"%files{'' if index == 0 else ' -n ' + name}", f"/usr/src/{name}-{spec.ofed_short}"]
        install += [
            f"mkdir -p %{{buildroot}}/usr/src/{name}-{spec.ofed_short}",
            f"echo 'PACKAGE_NAME={name}' > %{{buildroot}}/usr/src/{name}-{spec.ofed_short}/dkms.conf",
        ]
    spec_file = top / "SPECS" / "dkms.spec"
    spec_file.write_text("\n".join([*lines, "", "%prep", "%build", *install, ""]))
    run(install_pl.rpmbuild_argv(top, "-bb", str(spec_file)), work / "build.log")
    for package in (top / "RPMS").rglob("*.rpm"):
        shutil.move(package, out / package.name)
    return names


def _tools(spec: DocaSpec, work: Path, out: Path) -> None:
    """doca-extra (doca-kernel-support) and the driver sources with get_mlnx_ofed_version, in doca-extra itself
    or in doca-ofed-source (``DocaSpec.sources_in_extra``)."""
    source_name = f"MLNX_OFED_SRC-{spec.ofed_version}"
    tree = work / "src" / source_name
    (tree / "SRPMS").mkdir(parents=True)
    srpm_top = work / "srpm"
    (srpm_top / "SOURCES").mkdir(parents=True)
    shutil.copy(VENDOR / "kmod.py", srpm_top / "SOURCES" / "kmod.py")
    for component in COMPONENTS:
        spec_file = srpm_top / f"{component.name}.spec"
        spec_file.write_text(kernel_spec(component, spec.ofed_version))
        run(install_pl.rpmbuild_argv(srpm_top, "-bs", "--define", "KMP 1", str(spec_file)), work / "build.log")
    for srpm in (srpm_top / "SRPMS").glob("*.src.rpm"):
        shutil.move(srpm, tree / "SRPMS" / srpm.name)
    extra_stage = work / "stage-extra"
    source_stage = work / "stage-source"
    sources_root = (extra_stage if spec.sources_in_extra else source_stage) / TOOLS.lstrip("/")
    (sources_root / "resources").mkdir(parents=True)
    with tarfile.open(sources_root / "resources" / f"{source_name}.tgz", "w:gz", compresslevel=1) as tar:
        tar.add(tree, arcname=source_name)
    (sources_root / "get_mlnx_ofed_version").write_text(f'#!/bin/sh\necho "{spec.ofed_version}"\n')
    (sources_root / "get_mlnx_ofed_version").chmod(0o755)
    (sources_root / "doca-info").write_text(f"#!/bin/sh\necho 'DOCA {spec.doca_version}'\n")
    (sources_root / "doca-info").chmod(0o755)
    tools_version = spec.ofed_short.replace(".", "") + ".0." + spec.ofed_version.split("-")[1].split(".")[0]
    requires = ["pciutils"]
    if not spec.sources_in_extra:
        built = payload_package(work, "doca-ofed-source", tools_version, "1", "noarch", source_stage)
        shutil.move(built, out / built.name)
        requires.append(f"doca-ofed-source >= {tools_version}")
    tool_dir = extra_stage / TOOLS.lstrip("/")
    (tool_dir / "resources").mkdir(parents=True, exist_ok=True)
    text = (VENDOR / "doca_kernel_support.py").read_text()
    assert 'DOCA_VERSION = "0.0.0"' in text
    assert "SETS_DIST = True" in text
    (tool_dir / "doca-kernel-support").write_text(
        text.replace('DOCA_VERSION = "0.0.0"', f'DOCA_VERSION = "{spec.doca_version}"').replace(
            "SETS_DIST = True", f"SETS_DIST = {spec.tool_sets_dist}"
        )
    )
    (tool_dir / "doca-kernel-support").chmod(0o755)
    (tool_dir / "resources" / "find-provides.ksyms").write_text("#!/bin/sh\n# kernel symbol provides\ncat >/dev/null\n")
    (tool_dir / "resources" / "find-provides.ksyms").chmod(0o755)
    (extra_stage / "usr" / "share" / "doc" / "doca-extra").mkdir(parents=True)
    (extra_stage / "usr" / "share" / "doc" / "doca-extra" / "doca-kernel-support.adoc").write_text(
        "= doca-kernel-support\n"
    )
    # doca-extra-2607.0.10-1.el9 (the deprecation plan, option A): the EL major in its release.
    el_release = "1.el" + spec.tag.removeprefix("rhel").split(".")[0]
    built = payload_package(work, "doca-extra", tools_version, el_release, "noarch", extra_stage, requires)
    shutil.move(built, out / built.name)


def make_doca_tree(spec: DocaSpec, key: TestKey, parent: Path, without: tuple[str, ...] = ()) -> Path:
    """NVIDIA's online tree ``parent/doca/<ver>/<distro>/<arch>/`` for ``spec``; ``without`` leaves packages out
    (by name), as a partial mirror would."""
    root = parent / "doca" / spec.doca_version / spec.tag / spec.arch
    root.mkdir(parents=True)
    work = parent / f".work-doca-{spec.doca_version}"
    work.mkdir()
    _tools(spec, work, root)
    kernels = work / "kernels"
    ga_sources = make_kernel_sources(kernels, spec.ga_kernel)
    dist = "." + spec.tag.replace(".", "u") if "." in spec.tag else "." + spec.tag
    for srpm in sorted((work / "src" / f"MLNX_OFED_SRC-{spec.ofed_version}" / "SRPMS").glob("*.src.rpm")):
        if not install_pl.rebuild(srpm, spec.ga_kernel, ga_sources, spec.arch, root, work / "build.log", True, dist):
            raise RuntimeError(f"KMP build of {srpm.name} failed:\n{(work / 'build.log').read_text()[-4000:]}")
    for leftover in root.glob(".OFED_topdir-*"):
        shutil.rmtree(leftover)
    if spec.dkms:
        for package in [*root.glob("kmod-*.rpm"), *root.glob("*-devel-*.rpm")]:
            package.unlink()
        kernel_packages = _dkms_packages(spec, work, root)
    else:
        # doca-kernel leaves out kmod-mlnx-nvme (a DOCA 3.1 rhel9.6 `dnf install doca-kernel` pulls none:
        # schmaustech/ufm-install-rhel9), as the tool's doca-kernel-<K'> leaves out nvme, nfsrdma and fwctl.
        kernel_packages = [f"kmod-{component.kmp_name}" for component in COMPONENTS if component.name != "mlnx-nvme"]
    release = "1." + spec.ofed_version.split("-")[1].replace(".", "")
    build_userspace([*COMMON_USERSPACE, *mlnxofedinstall.LIBRARIES["upstream"]], spec.ofed_short, release, spec.arch,
                    root, work)  # fmt: skip
    _metapackages(spec, kernel_packages, work, root)
    for name in without:
        for package in root.glob(f"{name}-[0-9]*.rpm"):
            package.unlink()
    sign(sorted(root.glob("*.rpm")), key)
    (root / "RPM-GPG-KEY-doca").write_text(key.public_armored)
    subprocess.run(["createrepo_c", "--quiet", str(root)], check=True, capture_output=True)
    shutil.rmtree(work)
    return root


def make_local_repo_package(spec: DocaSpec, tree: Path, key: TestKey, parent: Path) -> Path:
    """``doca-host-<ver>-<build>_<ofed>_<distro>.<arch>.rpm`` holding ``tree`` as its repository."""
    work = parent / f".work-doca-host-{spec.doca_version}"
    stage = work / "stage"
    repo = stage / "usr" / "share" / f"doca-host-{spec.doca_version}" / "repo"
    (repo / "Packages").mkdir(parents=True)
    for package in tree.glob("*.rpm"):
        shutil.copy(package, repo / "Packages" / package.name)
    shutil.copy(tree / "RPM-GPG-KEY-doca", repo / "RPM-GPG-KEY-doca")
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True, capture_output=True)
    (stage / "etc" / "yum.repos.d").mkdir(parents=True)
    (stage / "etc" / "yum.repos.d" / "doca.repo").write_text(
        f"[doca]\nname=DOCA Online Repo\nbaseurl=file:///usr/share/doca-host-{spec.doca_version}/repo\nenabled=1\n"
        f"gpgcheck=1\ngpgkey=file:///usr/share/doca-host-{spec.doca_version}/repo/RPM-GPG-KEY-doca\n"
    )
    built = payload_package(work, "doca-host", spec.doca_version, spec.local_repo_release, spec.arch, stage)
    sign([built], key)
    target = parent / spec.local_repo_file
    shutil.move(built, target)
    shutil.rmtree(work)
    return target


#: What doca-kernel-support probes for with `rpm -q --whatprovides` before it builds (rollandf/doca-driver-build
#: poc/dks/run-rhel.sh, "Everything rpm_install_build_deps() probes"; the plan's §12.4: "eleven packages").
BUILD_DEPENDENCIES = [
    "createrepo_c", "rpm-build", "gcc", "autoconf", "automake", "libtool", "elfutils-libelf-devel", "binutils",
    "kernel-headers", "kernel-rpm-macros", "kernel-abi-stablelists",
]  # fmt: skip
RPM_DATABASE = Path("/var/lib/rpm")
DEPENDENCIES_PACKAGE = "ofedrepo-test-doca-build-dependencies"


@contextmanager
def build_dependencies_registered(work: Path) -> Iterator[None]:
    """This host as a prepared builder: one package providing every build dependency doca-kernel-support
    probes for, registered (``--justdb``: nothing is installed) in the rpm database at /var/lib/rpm, and
    unregistered afterwards. The real tools are on the host already (rpmbuild, gcc, make, createrepo_c)."""
    top = work / "dependencies"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / "dependencies.spec"
    spec.write_text(
        f"Name: {DEPENDENCIES_PACKAGE}\nVersion: 1\nRelease: 1\nSummary: build dependencies\nLicense: MIT\n"
        "BuildArch: noarch\n"
        + "".join(f"Provides: {name}\n" for name in BUILD_DEPENDENCIES)
        + "\n%description\nofedrepo's tests: doca-kernel-support's build dependencies are present.\n\n%files\n"
    )
    run(install_pl.rpmbuild_argv(top, "-bb", str(spec)), work / "build.log")
    (package,) = (top / "RPMS").rglob("*.rpm")
    created = not RPM_DATABASE.exists()
    rpm = ["rpm", "--dbpath", str(RPM_DATABASE)]
    if created:
        RPM_DATABASE.mkdir(parents=True)
        subprocess.run([*rpm, "--initdb"], check=True)
    subprocess.run([*rpm, "-e", DEPENDENCIES_PACKAGE], capture_output=True, check=False)  # a killed session's
    subprocess.run([*rpm, "-i", "--justdb", "--nodeps", "--nosignature", str(package)], check=True)
    try:
        yield
    finally:
        subprocess.run([*rpm, "-e", DEPENDENCIES_PACKAGE], capture_output=True, check=False)
        if created:
            shutil.rmtree(RPM_DATABASE, ignore_errors=True)
