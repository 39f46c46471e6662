#!/usr/bin/env python3
"""A model of a bundle's ``mlnxofedinstall``, as far as ``mlnx_add_kernel_support.sh`` uses it.

The script asks it, for each installation group, which packages the group holds::

    mlnxofedinstall --<group> [--mlnx-libs|--upstream-libs] -p [--without-dkms] -k K --tmpdir T \\
        [--without-<package>...] [--distro D] --skip-distro-check [--user-space-only]

and ``create_mlnx_ofed_installers.pl`` turns those lists into the ``mlnx-ofed-<group>`` metadata packages
(it reads ``OFED packages: ... Kernel modules:`` from the output). For the bundle's own (GA) kernel the
kernel packages are named as their KMP builds are (``kmod-<name>`` is found from ``<name>``); for any
other kernel as the non-KMP packages add-kernel-support builds (``mlnx-ofa_kernel-modules``, ``iser``...).
Differences from NVIDIA's: it only lists (it installs nothing), and group contents are a plausible
subset of the real ones.
"""

import sys
from pathlib import Path

LIBRARIES = {
    "upstream": ["rdma-core", "libibverbs", "libibverbs-utils", "librdmacm", "librdmacm-utils", "libibumad",
                 "infiniband-diags", "ibacm", "srp_daemon"],
    "mlnx": ["libibverbs", "libibverbs-utils", "libmlx5", "libmlx4", "librdmacm", "librdmacm-utils", "libibumad",
             "libibmad", "infiniband-diags", "srptools"],
}  # fmt: skip
KMP_KERNEL = {
    "core": ["mlnx-ofa_kernel", "kernel-mft-mlnx", "kernel-mft-mlnx-utils"],
    "knem": ["knem"],
    "storage": ["iser", "isert", "srp"],
    "nvme": ["mlnx-nvme"],
}
NON_KMP_KERNEL = {
    "core": ["mlnx-ofa_kernel", "mlnx-ofa_kernel-modules", "kernel-mft"],
    "knem": ["knem", "knem-modules"],
    "storage": ["iser", "isert", "srp"],
    "nvme": ["mlnx-nvme"],
}
BASE = ["ofed-scripts", "mlnx-tools", "mstflint", "mlnx-iproute2", "mlnx-ethtool"]
HPC = ["ucx", "hcoll", "openmpi", "mpitests", "perftest", "sharp"]
VMA = ["libvma", "libvma-utils", "sockperf"]
#: group -> (kernel parts, userspace packages besides the library set)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "all": (["core", "knem", "storage", "nvme"], [*BASE, *HPC, *VMA, "mlnx-dpdk", "mlnx-fw-updater", "mft"]),
    "hpc": (["core", "knem"], [*BASE, *HPC]),
    "basic": (["core"], BASE),
    "vma": (["core"], [*BASE, *VMA]),
    "vma-vpi": (["core"], [*BASE, *VMA]),
    "vma-eth": (["core"], [*BASE, *VMA]),
    "guest": (["core"], BASE),
    "hypervisor": (["core", "storage"], [*BASE, "perftest"]),
    "kernel-only": (["core", "storage", "nvme"], ["ofed-scripts", "mlnx-tools"]),
    "dpdk": (["core"], [*BASE, "mlnx-dpdk"]),
    "bluefield": (["core", "storage"], BASE),
}


def packages(
    group: str, libraries: str, kmp: bool, user_space_only: bool, without: set[str]
) -> tuple[list[str], list[str]]:
    """(packages, kernel components) of ``group``."""
    kernel_parts, userspace = GROUPS[group]
    kernel = [] if user_space_only else kernel_parts
    table = KMP_KERNEL if kmp else NON_KMP_KERNEL
    names = [name for part in kernel for name in table[part]]
    names += LIBRARIES[libraries] + userspace
    listed = [name for name in dict.fromkeys(names) if name.removesuffix("-modules") not in without]
    return listed, [table[part][0] for part in kernel]


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    group = next((argument[2:] for argument in argv if argument[2:] in GROUPS), None)
    if "-p" not in argv or group is None:
        print("this synthetic mlnxofedinstall only lists a group's packages: --<group> -p", file=sys.stderr)
        return 1
    kernel = argv[argv.index("-k") + 1] if "-k" in argv else None
    supported = (here / ".supported_kernels").read_text().split() if (here / ".supported_kernels").is_file() else []
    kmp = kernel is None or (bool(supported) and kernel == supported[0])
    if "--mlnx-libs" in argv:
        libraries = "mlnx"
    elif "--upstream-libs" in argv or list((here / "RPMS").rglob("rdma-core-*.rpm")):
        libraries = "upstream"
    else:
        libraries = "mlnx"
    without = {argument.removeprefix("--without-") for argument in argv if argument.startswith("--without-")}
    listed, modules = packages(group, libraries, kmp, "--user-space-only" in argv, without)
    print("Below is the list of MLNX_OFED_LINUX packages that you have chosen")
    print("OFED packages: " + " ".join(listed) + " Kernel modules: " + " ".join(modules))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
