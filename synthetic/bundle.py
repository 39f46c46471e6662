"""Synthetic MLNX_OFED bundles with NVIDIA's layout, built with real rpmbuild and rpmsign (tests only).

Three generations are modelled (``BundleSpec.generation``), each as NVIDIA ships it::

    MLNX_OFED_LINUX-<ver>-<distro>-<arch>/
        .mlnx  .arch  distro  .supported_kernels  LICENSE  RPM-GPG-KEY-Mellanox  docs/
        mlnx_add_kernel_support.sh  mlnxofedinstall  create_mlnx_ofed_installers.pl  common*.pl  uninstall.sh
        src/MLNX_OFED_SRC-<ver>.tgz        install.pl and the kernel source packages (SRPMS/) it rebuilds
        RPMS/*.rpm  RPMS/repodata/          "current" (5.2 to 24.10) and "legacy4" (4.x): one flat directory
        RPMS/COMMON/  RPMS/MLNX_LIBS/  RPMS/UPSTREAM_LIBS/
                                           "split5" (5.0-5.1): the kernel and common packages in COMMON,
                                           linked into two alternative library sets with their own packages

Stock packages are signed with a throwaway key shipped as ``RPM-GPG-KEY-Mellanox``: KMP ``kmod-*``
packages built for the distro's GA kernel (real ELF ``.ko`` files with a ``vermagic``), the userspace
packages, and ``mlnx-ofed-<group>`` metadata packages made by the bundle's own
``create_mlnx_ofed_installers.pl`` (so they ``Require`` the kmods). Each bundle's ``repodata/`` is stale on
purpose. The tools inside the bundle are the models in ``synthetic/vendor/``.
"""

import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pycdlib

from synthetic.vendor import install_pl, mlnxofedinstall

VENDOR = Path(__file__).parent / "vendor"
SCRIPT = "mlnx_add_kernel_support.sh"
GENERATIONS = ("current", "legacy4", "split5")
VARIANTS = {"MLNX_LIBS": "mlnx", "UPSTREAM_LIBS": "upstream"}


@dataclass(frozen=True)
class BundleSpec:
    ofed_version: str = "5.8-3.0.7.0"
    distro: str = "rhel8.6"
    arch: str = "x86_64"
    ga_kernel: str = "4.18.0-372.9.1.el8.x86_64"
    generation: str = "current"
    extra_packages: int = 0
    """Userspace packages added beyond the named ones (benchmarks ask for large bundles)."""

    @property
    def name(self) -> str:
        return f"MLNX_OFED_LINUX-{self.ofed_version}-{self.distro}-{self.arch}"

    @property
    def dist(self) -> str:
        """``.rhel8u6`` for ``rhel8.6``: how MLNX_OFED marks packages built for the distro's GA kernel."""
        return "." + self.distro.replace(".", "u")

    @property
    def split(self) -> bool:
        return self.generation == "split5"

    @property
    def libraries(self) -> list[str]:
        """The library sets the bundle ships: rdma-core (``upstream``), the legacy verbs (``mlnx``), or both."""
        return {"current": ["upstream"], "legacy4": ["mlnx"], "split5": ["mlnx", "upstream"]}[self.generation]


#: Packages in a current-generation bundle before ``extra_packages``: kernel, userspace, metadata.
STOCK_PACKAGES = 59
CURRENT = BundleSpec()
LEGACY = BundleSpec("4.9-7.1.0.0", "rhel7.9", ga_kernel="3.10.0-1160.el7.x86_64", generation="legacy4")
SPLIT = BundleSpec("5.0-2.1.8.0", "rhel8.1", ga_kernel="4.18.0-147.el8.x86_64", generation="split5")


@dataclass(frozen=True)
class Component:
    """A kernel source package and what it builds, KMP (stock) or not (add-kernel-support)."""

    name: str
    modules: tuple[str, ...]
    kmp_name: str
    utilities: bool = False
    """The main package holds utilities (always built); else it holds the modules of a non-KMP build."""
    main_kver: bool = False
    """A non-KMP build's main package carries the kernel in its release too (knem)."""
    kmp_utilities: str | None = None
    devel: bool = False
    version: str | None = None
    release: str | None = None


COMPONENTS = [
    Component("mlnx-ofa_kernel", ("mlx5_core", "mlx5_ib", "ib_core", "ib_uverbs", "mlx_compat"), "mlnx-ofa_kernel",
              utilities=True, devel=True),
    Component("kernel-mft", ("mst_pci", "mst_pciconf"), "kernel-mft-mlnx", kmp_utilities="kernel-mft-mlnx-utils",
              version="4.22.1", release="307"),
    Component("knem", ("knem",), "knem", utilities=True, main_kver=True, version="1.1.4.90mlnx1"),
    Component("iser", ("ib_iser",), "iser"),
    Component("isert", ("ib_isert",), "isert"),
    Component("srp", ("ib_srp",), "srp"),
    Component("mlnx-nvme", ("nvme_rdma", "nvmet_rdma"), "mlnx-nvme"),
]  # fmt: skip
assert [component.name for component in COMPONENTS] == install_pl.KERNEL_COMPONENTS

KERNEL_SPEC = """\
%{{!?KMP: %global KMP 0}}
%{{!?KVERSION: %global KVERSION %(uname -r)}}
%{{!?K_SRC: %global K_SRC /lib/modules/%{{KVERSION}}/build}}
%global krelver %(echo -n %{{KVERSION}} | sed -e 's/-/_/g')
%global vermagic %(cat %{{K_SRC}}/include/config/kernel.release 2>/dev/null || echo %{{KVERSION}})
%global with_mod_sign %(test -f "$MODULE_SIGN_PRIV_KEY" && test -f "$MODULE_SIGN_PUB_KEY" && echo -n 1 || echo -n 0)
%global moddir /lib/modules/%{{KVERSION}}/extra/{name}
%if "%{{KMP}}" == "1" || ! {main_kver}
%global main_release {release}%{{?_dist}}
%else
%global main_release {release}.kver.%{{krelver}}
%endif
Name: {name}
Version: {version}
Release: %{{main_release}}
Summary: {name} (synthetic MLNX_OFED kernel package)
License: GPLv2
Vendor: Mellanox Technologies
Source1: kmod.py
AutoReqProv: no

%description
Synthetic {name} for ofedrepo tests.
{packages}
%prep
%build
if [ ! -f %{{K_SRC}}/Makefile ]; then echo "error: %{{K_SRC}} is not a configured kernel tree" >&2; exit 1; fi
if [ -f %{{K_SRC}}/.synthetic-build-delay ] && [ "%{{name}}" = "mlnx-ofa_kernel" ]; then
    total=$(cat %{{K_SRC}}/.synthetic-build-delay)
    for second in $(seq 1 $total); do
        echo "  compiling kernel modules against %{{K_SRC}} ($second/$total s)"
        sleep 1
    done
fi
for module in {modules}; do
    echo "  CC [M]  %{{_builddir}}/obj/default/{name}/$module.o"
    if [ -f %{{K_SRC}}/.synthetic-compile-error ]; then cat %{{K_SRC}}/.synthetic-compile-error >&2; exit 1; fi
done

%install
for module in {modules}; do
    python3 %{{SOURCE1}} write %{{buildroot}}%{{moddir}}/$module.ko $module %{{vermagic}}
%if "%{{with_mod_sign}}" == "1"
    python3 %{{SOURCE1}} sign %{{buildroot}}%{{moddir}}/$module.ko "$MODULE_SIGN_PRIV_KEY" "$MODULE_SIGN_PUB_KEY"
%endif
done
mkdir -p %{{buildroot}}/usr/share/{name}
echo "{name} %{{version}}-%{{release}}" > %{{buildroot}}/usr/share/{name}/README
{install}
"""

KMP_PACKAGES = """
%if "%{{KMP}}" == "1"
%package -n kmod-{kmp_name}
Summary: {name} kernel modules for %{{KVERSION}} (KMP)
Release: {release}%{{?_kmp_build_num}}%{{?_dist}}
{requires_main}
%description -n kmod-{kmp_name}
{name} kernel modules, KMP format.
%files -n kmod-{kmp_name}
%{{moddir}}
{kmod_readme}{kmp_utilities}%else
{non_kmp}%endif
"""


#: What redhat-rpm-config's find-debuginfo adds to a KMP build on a RHEL builder, where
#: ``_enable_debug_packages`` is on by default: a ``-debuginfo`` per package with modules and the source
#: package's ``-debugsource`` (rollandf/doca-driver-build ``docs/install-pl-deprecation-plan.md`` §11.6: a
#: 47 MB ``kmod-mlnx-ofa_kernel-debuginfo`` and a 2 MB ``mlnx-ofa_kernel-debugsource`` in doca-kernel-support's
#: harvest). Off where the macro is not defined (Debian's rpm; the repositories NVIDIA publishes, in which no
#: public listing shows a debug package).
DEBUG_PACKAGES = """
%if 0%{{?_enable_debug_packages}} && "%{{KMP}}" == "1"
%package -n kmod-{kmp_name}-debuginfo
Summary: Debug information for kmod-{kmp_name}
Release: {release}%{{?_kmp_build_num}}%{{?_dist}}
%description -n kmod-{kmp_name}-debuginfo
Debug symbols of {name}'s kernel modules.
%files -n kmod-{kmp_name}-debuginfo
/usr/lib/debug%{{moddir}}
%package -n {name}-debugsource
Summary: Debug sources for {name}
%description -n {name}-debugsource
Sources of {name}, for debuggers.
%files -n {name}-debugsource
/usr/src/debug/{name}-%{{version}}
%endif
"""

DEBUG_INSTALL = """
%if 0%{{?_enable_debug_packages}} && "%{{KMP}}" == "1"
mkdir -p %{{buildroot}}/usr/lib/debug%{{moddir}} %{{buildroot}}/usr/src/debug/{name}-%{{version}}
for module in {modules}; do echo "$module symbols" > %{{buildroot}}/usr/lib/debug%{{moddir}}/$module.ko.debug; done
echo sources > %{{buildroot}}/usr/src/debug/{name}-%{{version}}/README
%endif
"""


def kernel_spec(component: Component, ofed_version: str) -> str:
    version = component.version or ofed_version.split("-")[0]
    release = component.release or "OFED." + ofed_version.replace("-", ".") + ".1"
    main = component.name
    requires_main = f"Requires: {main}" if component.utilities else ""
    kmp_utilities = ""
    if component.kmp_utilities:
        kmp_utilities = (
            f"%package -n {component.kmp_utilities}\nSummary: {main} utilities\nRelease: {release}%{{?_dist}}\n"
            f"%description -n {component.kmp_utilities}\n{main} utilities.\n"
            f"%files -n {component.kmp_utilities}\n/usr/share/{main}\n"
        )
    if component.utilities:
        non_kmp = (
            f"%package -n {main}-modules\nSummary: {main} kernel modules for %{{KVERSION}}\n"
            f"Release: {release}.kver.%{{krelver}}\nRequires: {main}\n"
            f"%description -n {main}-modules\n{main} kernel modules, non-KMP format.\n"
            f"%files -n {main}-modules\n%{{moddir}}\n"
        )
        main_files = f"%files\n/usr/share/{main}\n"
    else:
        non_kmp = f"%files\n%{{moddir}}\n/usr/share/{main}\n"
        main_files = ""
    packages = KMP_PACKAGES.format(
        name=main, kmp_name=component.kmp_name, release=release, requires_main=requires_main,
        kmp_utilities=kmp_utilities, non_kmp=non_kmp,
        kmod_readme="" if component.utilities or component.kmp_utilities else f"/usr/share/{main}\n",
    ) + main_files  # fmt: skip
    install = ""
    if component.devel:
        packages += (
            f"\n%package -n {main}-devel\nSummary: {main} sources for building other modules against\n"
            f'%if "%{{KMP}}" == "1"\nRelease: {release}%{{?_dist}}\n%else\n'
            f"Release: {release}.kver.%{{krelver}}\n%endif\n"
            f"%description -n {main}-devel\n{main} build tree for %{{KVERSION}}.\n"
            f"%files -n {main}-devel\n/usr/src/ofa_kernel/%{{_arch}}/%{{KVERSION}}\n"
            f"\n%package -n {main}-source\nSummary: {main} driver sources\n"
            f"%description -n {main}-source\nSources of {main}.\n"
            f"%files -n {main}-source\n/usr/src/ofa_kernel-%{{version}}\n"
        )
        install = (
            "mkdir -p %{buildroot}/usr/src/ofa_kernel/%{_arch}/%{KVERSION} %{buildroot}/usr/src/ofa_kernel-%{version}\n"
            "echo symbols > %{buildroot}/usr/src/ofa_kernel/%{_arch}/%{KVERSION}/Module.symvers\n"
            "echo sources > %{buildroot}/usr/src/ofa_kernel-%{version}/README\n"
        )
    modules = " ".join(component.modules)
    packages += DEBUG_PACKAGES.format(name=main, kmp_name=component.kmp_name, release=release)
    install += DEBUG_INSTALL.format(name=main, modules=modules)
    return KERNEL_SPEC.format(
        name=main, version=version, release=release, main_kver=int(component.main_kver or not component.utilities),
        modules=modules, packages=packages, install=install,
    )  # fmt: skip


USERSPACE_SPEC_HEAD = """\
Name: {first}
Version: {version}
Release: {release}
Summary: synthetic MLNX_OFED userspace package
License: GPLv2
Vendor: Mellanox Technologies
AutoReqProv: no

%description
Synthetic userspace package for ofedrepo tests.

%prep
%build
%install
for name in {names}; do
    mkdir -p %{{buildroot}}/usr/share/mlnx-ofed/$name
    echo "$name {version}" > %{{buildroot}}/usr/share/mlnx-ofed/$name/README
done

%files
/usr/share/mlnx-ofed/{first}
"""

USERSPACE_SUBPACKAGE = """
%package -n {name}
Summary: synthetic MLNX_OFED userspace package {name}

%description -n {name}
Synthetic userspace package {name}.

%files -n {name}
/usr/share/mlnx-ofed/{name}
"""

#: Userspace packages outside the library sets, and the versions of the library sets.
COMMON_USERSPACE = [
    "ofed-scripts", "mlnx-tools", "mstflint", "mlnx-iproute2", "mlnx-ethtool", "mft", "ucx", "hcoll", "openmpi",
    "mpitests", "perftest", "sharp", "libvma", "libvma-utils", "sockperf", "mlnx-dpdk", "mlnx-fw-updater",
]  # fmt: skip
LIBRARY_VERSIONS = {
    "upstream": {"current": "58mlnx43", "split5": "50mlnx1"},
    "mlnx": {"legacy4": "41mlnx1", "split5": "41mlnx1"},
}


@dataclass(frozen=True)
class TestKey:
    gnupg_home: Path
    fingerprint: str
    public_armored: str


def tool_environment(gnupg_home: Path | None = None) -> dict[str, str]:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(gnupg_home or "/nonexistent")}
    if gnupg_home is not None:
        environment["GNUPGHOME"] = str(gnupg_home)
    return environment


def make_test_key(home: Path, uid: str = "Synthetic Mellanox Technologies <support@example.invalid>") -> TestKey:
    home.mkdir(mode=0o700, parents=True)
    gpg = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    environment = tool_environment(home)
    subprocess.run([*gpg, "--quick-gen-key", uid, "rsa2048", "sign", "never"], env=environment, check=True,
                   capture_output=True)  # fmt: skip
    listing = subprocess.run([*gpg, "--with-colons", "--list-secret-keys"], env=environment, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    public = subprocess.run([*gpg, "--armor", "--export", fingerprint], env=environment, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    return TestKey(gnupg_home=home, fingerprint=fingerprint, public_armored=public)


def sign(packages: list[Path], key: TestKey) -> None:
    subprocess.run(
        ["rpmsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_name {key.fingerprint}",
         "--addsign", *map(str, packages)],
        env=tool_environment(key.gnupg_home), check=True, capture_output=True,
    )  # fmt: skip


def run(argv: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    with log.open("a") as handle:
        handle.write("+ " + " ".join(argv) + "\n")
        handle.flush()
        completed = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{log.read_text()[-4000:]}")


def build_userspace(names: list[str], version: str, release: str, arch: str, out: Path, work: Path) -> None:
    """One rpmbuild for a set of userspace packages of one version."""
    top = work / f"userspace-{version}"
    top.mkdir(parents=True)
    spec = USERSPACE_SPEC_HEAD.format(first=names[0], version=version, release=release, names=" ".join(names))
    spec += "".join(USERSPACE_SUBPACKAGE.format(name=name) for name in names[1:])
    (top / "userspace.spec").write_text(spec)
    run(install_pl.rpmbuild_argv(top, "-bb", "--target", arch, str(top / "userspace.spec")), work / "build.log")
    out.mkdir(parents=True, exist_ok=True)
    for package in (top / "RPMS").rglob("*.rpm"):
        shutil.move(package, out / package.name)


def install_tool(source: str, destination: Path, replacements: dict[str, str] | None = None) -> None:
    text = (VENDOR / source).read_text()
    for old, new in (replacements or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    destination.write_text(text)
    destination.chmod(0o755)


def make_module_signing_keys(directory: Path, name: str = "ofedrepo test module signing") -> tuple[Path, Path]:
    """A Secure Boot module signing pair as a kernel build makes it: ``signing_key.pem`` (the private key) and
    ``signing_key.x509`` (the self-signed certificate, DER), for ``OFEDREPO_MODULE_SIGN_PRIV_KEY`` and
    ``OFEDREPO_MODULE_SIGN_PUB_KEY``."""
    directory.mkdir(parents=True, exist_ok=True)
    private_key, certificate = directory / "signing_key.pem", directory / "signing_key.x509"
    subprocess.run(
        ["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", f"/CN={name}",
         "-keyout", str(private_key), "-outform", "DER", "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    return private_key, certificate


#: A kernel tree's top Makefile, as far as tools ask it: ``make -s kernelrelease`` prints the release that
#: include/config/kernel.release holds (doca-kernel-support -s reads the kernel version so, VENDOR sources [A2]).
KERNEL_MAKEFILE = """\
# kernel {kernel}
KERNELRELEASE = $(shell cat include/config/kernel.release 2> /dev/null)
kernelrelease:
\t@echo "$(KERNELRELEASE)"
"""


def make_kernel_sources(
    root: Path, kernel: str, release: str | None = None, build_seconds: int = 0, compile_error: str | None = None
) -> Path:
    """A stand-in for /usr/src/kernels/<K>: a Makefile and include/config/kernel.release, whose release
    (``release``, default ``kernel``) the modules' vermagic takes, as kbuild would. ``build_seconds`` makes
    the build of mlnx-ofa_kernel take that long, printing a line a second; ``compile_error`` is what the
    "compiler" prints, failing, for every module built against these sources."""
    sources = root / kernel
    (sources / "include" / "config").mkdir(parents=True, exist_ok=True)
    (sources / "Makefile").write_text(KERNEL_MAKEFILE.format(kernel=kernel))
    (sources / "include" / "config" / "kernel.release").write_text(f"{release or kernel}\n")
    if build_seconds:
        (sources / ".synthetic-build-delay").write_text(str(build_seconds))
    if compile_error:
        (sources / ".synthetic-compile-error").write_text(compile_error + "\n")
    return sources


def make_bundle(spec: BundleSpec, key: TestKey, parent: Path) -> Path:
    """Build the stock bundle directory ``parent/<spec.name>`` as NVIDIA ships it, and return it."""
    bundle = parent / spec.name
    work = parent / f".work-{spec.name}"
    work.mkdir(parents=True)
    log = work / "build.log"
    rpms = bundle / "RPMS"
    common = rpms / "COMMON" if spec.split else rpms
    variant_dirs = {variant: rpms / variant for variant in VARIANTS} if spec.split else {}
    for directory in (common, *variant_dirs.values()):
        directory.mkdir(parents=True)

    # The sources add-kernel-support rebuilds: install.pl and one source package per kernel component.
    source_name = f"MLNX_OFED_SRC-{spec.ofed_version}"
    source_tree = work / "src" / source_name
    (source_tree / "SRPMS").mkdir(parents=True)
    install_tool("install_pl.py", source_tree / "install.pl")
    srpm_top = work / "srpm"
    (srpm_top / "SOURCES").mkdir(parents=True)
    shutil.copy(VENDOR / "kmod.py", srpm_top / "SOURCES" / "kmod.py")
    for component in COMPONENTS:
        spec_file = srpm_top / f"{component.name}.spec"
        spec_file.write_text(kernel_spec(component, spec.ofed_version))
        run(install_pl.rpmbuild_argv(srpm_top, "-bs", "--define", "KMP 1", str(spec_file)), log)
    for srpm in (srpm_top / "SRPMS").glob("*.src.rpm"):
        shutil.move(srpm, source_tree / "SRPMS" / srpm.name)
    (bundle / "src").mkdir()
    with tarfile.open(bundle / "src" / f"{source_name}.tgz", "w:gz", compresslevel=1) as tar:
        tar.add(source_tree, arcname=source_name)

    # NVIDIA's kernel packages: KMP builds for the distro's GA kernel.
    ga_sources = make_kernel_sources(work / "kernels", spec.ga_kernel)
    for srpm in sorted((source_tree / "SRPMS").glob("*.src.rpm")):
        if not install_pl.rebuild(srpm, spec.ga_kernel, ga_sources, spec.arch, common, log, kmp=True, dist=spec.dist):
            raise RuntimeError(f"KMP build of {srpm.name} failed:\n{log.read_text()[-4000:]}")

    # Userspace: the packages every variant shares, then each library set.
    ofed_release = "1." + spec.ofed_version.split("-")[1].replace(".", "")
    extras = [f"ofed-extra-{index:03d}" for index in range(spec.extra_packages)]
    build_userspace(COMMON_USERSPACE + extras, spec.ofed_version.split("-")[0], ofed_release, spec.arch, common, work)
    for libraries in spec.libraries:
        target = variant_dirs[next(v for v, name in VARIANTS.items() if name == libraries)] if spec.split else rpms
        version = LIBRARY_VERSIONS[libraries][spec.generation]
        build_userspace(mlnxofedinstall.LIBRARIES[libraries], version, ofed_release, spec.arch, target, work)
    for target in variant_dirs.values():
        for package in sorted(common.glob("*.rpm")):
            (target / package.name).symlink_to(f"../COMMON/{package.name}")

    # The bundle's own files, then its metadata packages, made by its own tools.
    (bundle / ".mlnx").write_text(spec.ofed_version + "\n")
    (bundle / "distro").write_text(spec.distro + "\n")
    (bundle / ".arch").write_text(spec.arch + "\n")
    (bundle / ".supported_kernels").write_text(spec.ga_kernel + "\n")
    (bundle / "LICENSE").write_text("Synthetic test bundle; not NVIDIA software.\n")
    (bundle / "docs").mkdir()
    (bundle / "docs" / "README.txt").write_text("Synthetic MLNX_OFED bundle for ofedrepo tests.\n")
    for name in ("common.pl", "common_installers.pl"):
        (bundle / name).write_text("# synthetic: not used by the modelled tools\n1;\n")
    (bundle / "uninstall.sh").write_text("#!/bin/sh\necho 'synthetic bundle: nothing to uninstall'\n")
    (bundle / "RPM-GPG-KEY-Mellanox").write_text(key.public_armored)
    install_tool("mlnxofedinstall.py", bundle / "mlnxofedinstall")
    install_tool("create_mlnx_ofed_installers.pl", bundle / "create_mlnx_ofed_installers.pl")
    install_tool(
        "mlnx_add_kernel_support.py", bundle / SCRIPT, {'GENERATION = "current"': f'GENERATION = "{spec.generation}"'}
    )
    metadata_targets: list[tuple[Path, str | None]] = [
        (target, f"--{name}-libs") for name, target in _by_libraries(variant_dirs)
    ] or [(rpms, None)]
    for target, flag in metadata_targets:
        for group in mlnxofedinstall.GROUPS:
            for user_only in ([], ["--user-space-only"]) if group != "kernel-only" else ([],):
                listing = target / f"{group}{'-user-only' if user_only else ''}_packages.txt"
                command = [str(bundle / "mlnxofedinstall"), f"--{group}", *([flag] if flag else []), "-p"]
                command += ["-k", spec.ga_kernel, *user_only]
                listing.write_text(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        command = ["perl", str(bundle / "create_mlnx_ofed_installers.pl"), "--with-hpc", "--tmpdir", str(work)]
        command += ["--mofed", str(bundle), "--rpms-tdir", str(target), "--output", str(work)]
        command += ["--ignore-groups", "eth-only", *(["--upstream-libs"] if flag == "--upstream-libs" else [])]
        run(command, log)
        for listing in target.glob("*_packages.txt"):
            listing.unlink()
    sign(sorted(path for path in rpms.rglob("*.rpm") if not path.is_symlink()), key)
    for target in (rpms, *variant_dirs.values()):
        (target / "repodata").mkdir()
        (target / "repodata" / "repomd.xml").write_text("<repomd><!-- stale metadata from the vendor --></repomd>\n")
    shutil.rmtree(work)
    return bundle


def _by_libraries(variant_dirs: dict[str, Path]) -> list[tuple[str, Path]]:
    return [(VARIANTS[variant], directory) for variant, directory in sorted(variant_dirs.items())]


def tool_shims(directory: Path) -> dict[str, str]:
    """An environment whose PATH has ``createrepo`` and ``mkisofs`` as RHEL hosts name them.

    The script wants ``createrepo`` (RHEL's createrepo_c provides that name; Debian's does not) and
    ``mkisofs`` (xorriso answers to it as genisoimage does).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, target in (("createrepo", "/usr/bin/createrepo_c"), ("mkisofs", "/usr/bin/xorrisofs")):
        if not (directory / name).exists():
            (directory / name).symlink_to(target)
    return {**os.environ, "PATH": f"{directory}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def add_kernel_support(
    bundle: Path,
    kernel: str,
    sources: Path,
    tmpdir: Path,
    *extra: str,
    skip_repo: bool = True,
    iso: bool = False,
    distro: str | None = None,
) -> Path:
    """Run the bundle's own script as the README tells users to; return the ``-ext.tgz`` (or ``.iso``).

    ``--distro`` defaults to the bundle's own tag: on a host whose rpm does not own /etc/issue the script
    cannot detect it.
    """
    tag = distro or (bundle / "distro").read_text().strip()
    argv = ["bash", str(bundle / SCRIPT), "-m", str(bundle), "-k", kernel, "-s", str(sources)]
    argv += ["--make-iso" if iso else "--make-tgz", "-t", str(tmpdir), "-y", "--distro", tag, *extra]
    argv += ["--skip-repo"] if skip_repo else []
    completed = subprocess.run(argv, capture_output=True, text=True, env=tool_shims(tmpdir.parent / ".shims"))
    if completed.returncode != 0:
        raise RuntimeError(f"add-kernel-support failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    produced = tmpdir / f"{bundle.name}-ext.{'iso' if iso else 'tgz'}"
    assert produced.is_file(), completed.stdout
    return produced


def make_tgz(directory: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(directory, arcname=directory.name)
    return archive


def make_iso(directory: Path, iso_path: Path) -> Path:
    """An ISO 9660 image with Rock Ridge names and links holding the directory's content at its top, the
    way MLNX_OFED ISOs are made (``mkisofs -r <dir>``)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, rock_ridge="1.09", vol_ident="MLNX_OFED")
    iso_names = {directory: ""}
    for index, path in enumerate(sorted(directory.rglob("*"))):
        iso_name = f"{iso_names[path.parent]}/N{index:07d}"
        iso_names[path] = iso_name
        if path.is_symlink():
            iso.add_symlink(iso_name + ";1", rr_symlink_name=path.name, rr_path=os.readlink(path))
        elif path.is_dir():
            iso.add_directory(iso_name, rr_name=path.name)
        else:
            data = path.read_bytes()
            iso.add_fp(io.BytesIO(data), len(data), iso_name + ";1", rr_name=path.name)
    iso.write(str(iso_path))
    iso.close()
    return iso_path


KERNEL_DEVEL_SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: synthetic kernel sources for ofedrepo tests
License: GPLv2
AutoReqProv: no

%description
What add-kernel-support builds against: /usr/src/kernels/{kernel}.

%prep
%build
%install
mkdir -p %{{buildroot}}/usr/src/kernels/{kernel}/include/config
cat > %{{buildroot}}/usr/src/kernels/{kernel}/Makefile <<'MAKEFILE'
{makefile}MAKEFILE
echo {kernel} > %{{buildroot}}/usr/src/kernels/{kernel}/include/config/kernel.release
{extra}
%files
/usr/src/kernels/{kernel}
"""


def add_kernel_devel(repo: Path, kernel: str, build_seconds: int = 0, key: TestKey | None = None) -> Path:
    """Add ``kernel-devel-<kernel>`` (rpmbuild, signed with ``key`` as the distro signs it) to the yum repository
    ``repo`` and regenerate its metadata (createrepo_c), as a distro mirror does when it ships a kernel.
    ``build_seconds`` slows the builds made against it, as ``make_kernel_sources``'s does. An EL9 flavoured
    kernel (``...x86_64+rt``, ``...aarch64+64k``) comes as ``kernel-rt-devel``/``kernel-64k-devel`` of the
    version-release-arch before the ``+``, installing ``/usr/src/kernels/<kernel>``, as Rocky's RT repository has
    it."""
    base, _, flavor = kernel.partition("+")
    name = f"kernel-{flavor}-devel" if flavor else "kernel-devel"
    version, rest = base.split("-", 1)
    release, arch = rest.rsplit(".", 1)
    work = repo.parent / f"{repo.name}-rpmbuild-{kernel}"
    work.mkdir(parents=True)
    delay = (
        f"echo {build_seconds} > %{{buildroot}}/usr/src/kernels/{kernel}/.synthetic-build-delay"
        if build_seconds
        else ""
    )
    spec_file = work / "kernel-devel.spec"
    spec_file.write_text(
        KERNEL_DEVEL_SPEC.format(
            name=name,
            version=version,
            release=release,
            kernel=kernel,
            extra=delay,
            makefile=KERNEL_MAKEFILE.format(kernel=kernel),
        )  # fmt: skip
    )
    subprocess.run(install_pl.rpmbuild_argv(work, "-bb", "--target", arch, str(spec_file)), check=True,
                   capture_output=True)  # fmt: skip
    (repo / "Packages").mkdir(parents=True, exist_ok=True)
    for package in (work / "RPMS").rglob("*.rpm"):
        if key is not None:
            sign([package], key)
        shutil.move(package, repo / "Packages" / package.name)
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True, capture_output=True)
    return repo


def make_kernel_devel_repo(repo: Path, kernel: str, key: TestKey | None = None) -> Path:
    """A yum repository (rpmbuild + createrepo_c) holding ``kernel-devel-<kernel>``, as a distro mirror has it."""
    return add_kernel_devel(repo, kernel, key=key)
