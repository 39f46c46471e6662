"""Disk images for the inspection tests, written with libguestfs the way image builders lay them out.

Every image of a session is built in one appliance launch (a launch costs ~15 s here) and kept in a cache
keyed by the content of its spec and of this file, so an unchanged spec is never built twice. Each image
is a small sparse qcow2 holding only what inspection reads: ``/etc/os-release`` and the release files,
``/etc/fstab``, kernels under ``/lib/modules`` and ``/boot``, boot loader configuration and an rpm database
made by the host's ``rpm --justdb`` from tiny packages built with ``rpmbuild``.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import guestfs

HERE = Path(__file__)
MACHINE_ID = "3f2b9a4c1e7d4b5a9c0d8e6f7a1b2c3d"

KERNEL_PACKAGE_SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: installed-kernel marker for inspection tests
License: GPL-2.0-only
BuildArch: {arch}
%description
Only its name, version, release and arch matter: inspection reads them from the rpm database.
%files
"""


@dataclass(frozen=True)
class ImageSpec:
    """What one test image holds. ``kernels`` get ``/lib/modules/<K>`` and ``/boot/vmlinuz-<K>``."""

    name: str
    os_release: str
    kernels: tuple[str, ...] = ()
    #: (package name, kernel release) pairs recorded in the image's rpm database.
    rpm_kernels: tuple[tuple[str, str], ...] = ()
    #: Extra files, path → content (boot loader configuration, release files...).
    files: tuple[tuple[str, str], ...] = ()
    #: Extra directories, e.g. a hostile name under /lib/modules that must be ignored.
    directories: tuple[str, ...] = ()
    #: ``single``: one ext4 partition; ``lvm``: /boot on sda1, root on an LVM volume (TripleO whole-disk).
    layout: str = "single"
    #: Copy the host's /usr/bin/true in as /usr/bin/bash, so that libguestfs can read an ELF arch.
    elf_binary: bool = False
    size_mib: int = 256

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha256(HERE.read_bytes())
        digest.update(repr((self.name, self.os_release, self.kernels, self.rpm_kernels, self.files)).encode())
        digest.update(repr((self.directories, self.layout, self.elf_binary, self.size_mib)).encode())
        return digest.hexdigest()[:24]


def os_release(distro_id: str, version_id: str, name: str) -> str:
    return f'NAME="{name}"\nVERSION="{version_id}"\nID="{distro_id}"\nVERSION_ID="{version_id}"\nPRETTY_NAME="{name}"\n'


def bls_entry(kernel: str, title: str) -> str:
    return (
        f"title {title} ({kernel})\nversion {kernel}\nlinux /vmlinuz-{kernel}\ninitrd /initramfs-{kernel}.img\n"
        f"options $kernelopts\nid rocky-20220915-{kernel}\ngrub_users $grub_users\ngrub_class kernel\n"
    )


def grubenv(**values: str) -> str:
    """A GRUB environment block: exactly 1024 bytes, padded with ``#``."""
    text = "# GRUB Environment Block\n" + "".join(f"{key}={value}\n" for key, value in values.items())
    return text + "#" * (1024 - len(text))


def centos7_grub_cfg(kernels: list[str]) -> str:
    entries = "".join(
        f"menuentry 'CentOS Linux ({kernel}) 7 (Core)' --class centos --class gnu-linux --class gnu --class os "
        f"--unrestricted $menuentry_id_option 'gnulinux-{kernel}-advanced-1c1d' {{\n"
        "\tload_video\n\tset gfxpayload=keep\n\tinsmod gzio\n\tinsmod part_msdos\n\tinsmod xfs\n"
        f"\tlinux16 /boot/vmlinuz-{kernel} root=UUID=1c1d ro crashkernel=auto rhgb quiet\n"
        f"\tinitrd16 /boot/initramfs-{kernel}.img\n}}\n"
        for kernel in kernels
    )
    return (
        "### BEGIN /etc/grub.d/00_header ###\nset pager=1\n\nif [ -s $prefix/grubenv ]; then\n  load_env\nfi\n"
        'if [ "${next_entry}" ] ; then\n   set default="${next_entry}"\n   set next_entry=\n   save_env next_entry\n'
        '   set boot_once=true\nelse\n   set default="${saved_entry}"\nfi\n### END /etc/grub.d/00_header ###\n'
        f"### BEGIN /etc/grub.d/10_linux ###\n{entries}### END /etc/grub.d/10_linux ###\n"
    )


def cached_image(spec: ImageSpec, cache: Path) -> Path:
    """Where ``spec``'s image is kept in ``cache`` (made by ``build_images`` when missing)."""
    return cache / f"{spec.name}-{spec.cache_key}.qcow2"


def build_images(specs: list[ImageSpec], cache: Path) -> dict[str, Path]:
    """Build the images not yet in ``cache`` (in one launch) and return every spec's image path."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = {spec.name: cached_image(spec, cache) for spec in specs}
    missing = [spec for spec in specs if not paths[spec.name].exists()]
    if not missing:
        return paths
    with tempfile.TemporaryDirectory(prefix="images-", dir=cache) as scratch_text:
        scratch = Path(scratch_text)
        partial = {spec.name: scratch / paths[spec.name].name for spec in missing}
        handle = guestfs.GuestFS(python_return_dict=True)
        # KVM crashes on this machine; building test fixtures is not what the product's fallback is for.
        handle.set_backend_settings(["force_tcg"])
        for spec in missing:
            handle.disk_create(str(partial[spec.name]), "qcow2", spec.size_mib * 1024 * 1024)
            handle.add_drive_opts(str(partial[spec.name]), format="qcow2", readonly=False)
        handle.launch()
        devices = handle.list_devices()
        for spec, device in zip(missing, devices, strict=True):
            rpmdb = _rpm_database(spec, scratch / f"rpmdb-{spec.name}")
            _write_image(handle, spec, device, rpmdb)
        handle.shutdown()
        handle.close()
        for spec in missing:
            os.replace(partial[spec.name], paths[spec.name])
    return paths


def _write_image(handle: guestfs.GuestFS, spec: ImageSpec, device: str, rpmdb: Path | None) -> None:
    if spec.layout == "lvm":
        handle.part_init(device, "mbr")
        handle.part_add(device, "p", 2048, 2048 + 64 * 2048 - 1)
        handle.part_add(device, "p", 2048 + 64 * 2048, -2048)
        boot, physical = f"{device}1", f"{device}2"
        volume_group = f"vg{device[-1]}"
        handle.pvcreate(physical)
        handle.vgcreate(volume_group, [physical])
        handle.lvcreate_free("root", volume_group, 100)
        root = f"/dev/{volume_group}/root"
        handle.mkfs("ext4", boot)
        handle.mkfs("ext4", root)
        boot_uuid = handle.vfs_uuid(boot)
        fstab = f"/dev/mapper/{volume_group}-root / ext4 defaults 0 1\nUUID={boot_uuid} /boot ext4 defaults 0 2\n"
        handle.mount(root, "/")
        handle.mkdir("/boot")
        handle.mount(boot, "/boot")
    else:
        handle.part_disk(device, "mbr")
        root = f"{device}1"
        handle.mkfs("ext4", root)
        fstab = f"UUID={handle.vfs_uuid(root)} / ext4 defaults 0 1\n"
        handle.mount(root, "/")
        handle.mkdir("/boot")
    for directory in ("/etc", "/usr/bin", "/usr/lib/modules", "/var/lib/rpm", "/boot/grub2", "/etc/sysconfig"):
        handle.mkdir_p(directory)
    handle.ln_s("usr/bin", "/bin")
    handle.ln_s("usr/lib", "/lib")
    handle.write("/etc/fstab", fstab)
    handle.write("/etc/os-release", spec.os_release)
    handle.write("/etc/machine-id", MACHINE_ID + "\n")
    if spec.elf_binary:
        handle.upload("/usr/bin/true", "/usr/bin/bash")
    for kernel in spec.kernels:
        handle.mkdir_p(f"/usr/lib/modules/{kernel}/kernel")
        handle.write(f"/usr/lib/modules/{kernel}/modules.dep", "")
        handle.write(f"/boot/vmlinuz-{kernel}", "not really a kernel\n")
    for directory in spec.directories:
        handle.mkdir_p(directory)
    for path, content in spec.files:
        handle.mkdir_p(os.path.dirname(path))
        handle.write(path, content)
    if rpmdb is not None:
        for entry in sorted(rpmdb.iterdir()):
            handle.upload(str(entry), f"/var/lib/rpm/{entry.name}")
    handle.umount_all()


def _rpm_database(spec: ImageSpec, workdir: Path) -> Path | None:
    """An rpm database holding one marker package per (name, kernel), made with the host's rpm."""
    if not spec.rpm_kernels:
        return None
    topdir = workdir / "rpmbuild"
    database = workdir / "db"
    (topdir / "SPECS").mkdir(parents=True)
    database.mkdir()
    packages: list[Path] = []
    for name, kernel in spec.rpm_kernels:
        version, rest = kernel.split("-", 1)
        release, arch = rest.rsplit(".", 1)
        spec_file = topdir / "SPECS" / f"{name}-{kernel}.spec"
        spec_file.write_text(KERNEL_PACKAGE_SPEC.format(name=name, version=version, release=release, arch=arch))
        subprocess.run(
            ["rpmbuild", "--define", f"_topdir {topdir}", "--define", f"_dbpath {database}", "--target", arch,
             "-bb", str(spec_file)],
            check=True, capture_output=True,
        )  # fmt: skip
        packages.extend((topdir / "RPMS" / arch).glob(f"{name}-{version}-{release}.{arch}.rpm"))
    subprocess.run(["rpm", "--dbpath", str(database), "--initdb"], check=True, capture_output=True)
    subprocess.run(
        ["rpm", "--dbpath", str(database), "-i", "--justdb", "--nodeps", "--noscripts", "--ignorearch",
         "--ignoreos", *map(str, packages)],
        check=True, capture_output=True,
    )  # fmt: skip
    # Checkpoint the write-ahead log so that the database is whole in rpmdb.sqlite.
    for leftover in ("rpmdb.sqlite-shm", "rpmdb.sqlite-wal"):
        (database / leftover).unlink(missing_ok=True)
    return database


def copy_truncated(source: Path, destination: Path, keep_bytes: int) -> Path:
    """A copy of ``source`` cut after ``keep_bytes``: what an interrupted download leaves."""
    with source.open("rb") as reader, destination.open("wb") as writer:
        writer.write(reader.read(keep_bytes))
    return destination


def with_backing_file(destination: Path, backing: Path) -> Path:
    """A qcow2 naming ``backing`` as its backing file, made without opening it (``-u``)."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", str(backing), "-F", "raw", str(destination), "64M"],
        check=True,
    )
    return destination


def hostile_images(directory: Path, good_qcow2: Path) -> dict[str, Path]:
    """Files posing as images, each refused for its own reason before any appliance launch."""
    fifo = directory / "backing-fifo"
    os.mkfifo(fifo)
    return {
        "random": random_bytes(directory / "random.qcow2"),
        "truncated": copy_truncated(good_qcow2, directory / "truncated.qcow2", 300_000),
        # A FIFO as the backing file: whatever opened it for reading would hang right there.
        "backing": with_backing_file(directory / "backing.qcow2", fifo),
        "shadow": with_backing_file(directory / "shadow.qcow2", Path("/etc/shadow")),
        "tiny": random_bytes(directory / "tiny.img", 100),
    }


def random_bytes(destination: Path, size: int = 4 * 1024 * 1024) -> Path:
    destination.write_bytes(os.urandom(size))
    return destination


def copy_image(source: Path, destination: Path) -> Path:
    shutil.copyfile(source, destination)
    return destination


ROCKY_OLD = "4.18.0-372.9.1.el8.x86_64"
ROCKY_NEW = "4.18.0-372.26.1.el8_6.x86_64"
CENTOS_OLD = "3.10.0-514.el7.x86_64"
CENTOS_NEW = "3.10.0-514.26.2.el7.x86_64"
TRIPLEO_KERNEL = "5.14.0-284.11.1.el9_2.x86_64"
UBUNTU_KERNEL = "5.15.0-91-generic"

#: RHEL-like 8.6 with two kernels; grubenv pins the older one (as an operator does after a bad update).
ROCKY8 = ImageSpec(
    name="rocky86",
    os_release=os_release("rocky", "8.6", "Rocky Linux"),
    kernels=(ROCKY_OLD, ROCKY_NEW),
    rpm_kernels=tuple((name, kernel) for kernel in (ROCKY_OLD, ROCKY_NEW) for name in ("kernel", "kernel-core")),
    files=(
        ("/etc/redhat-release", "Rocky Linux release 8.6 (Green Obsidian)\n"),
        ("/etc/sysconfig/kernel", "UPDATEDEFAULT=yes\nDEFAULTKERNEL=kernel-core\n"),
        (f"/boot/loader/entries/{MACHINE_ID}-{ROCKY_OLD}.conf", bls_entry(ROCKY_OLD, "Rocky Linux")),
        (f"/boot/loader/entries/{MACHINE_ID}-{ROCKY_NEW}.conf", bls_entry(ROCKY_NEW, "Rocky Linux")),
        ("/boot/grub2/grubenv", grubenv(saved_entry=f"{MACHINE_ID}-{ROCKY_OLD}", kernelopts="root=/dev/sda1 ro")),
    ),
    # Names under /lib/modules that are not kernel releases: ignored, never passed on.
    directories=("/usr/lib/modules/extra", "/usr/lib/modules/$(reboot)"),
    elf_binary=True,
)

#: What ``ofedrepo demo`` inspects: the same Rocky 8.6, booting its errata kernel, which the bundle's packages
#: are not built for (its GA kernel is ROCKY_OLD): a rebuild.
DEMO = replace(
    ROCKY8,
    name="demo-rocky86",
    files=tuple(
        (path, grubenv(saved_entry=f"{MACHINE_ID}-{ROCKY_NEW}", kernelopts="root=/dev/sda1 ro"))
        if path == "/boot/grub2/grubenv"
        else (path, content)
        for path, content in ROCKY8.files
    ),
    directories=(),
)

#: CentOS 7.3: os-release says only "7"; the minor is in /etc/centos-release; grub.cfg + saved_entry title.
CENTOS73 = ImageSpec(
    name="centos73",
    os_release=os_release("centos", "7", "CentOS Linux"),
    kernels=(CENTOS_OLD, CENTOS_NEW),
    rpm_kernels=(("kernel", CENTOS_OLD), ("kernel", CENTOS_NEW)),
    files=(
        ("/etc/centos-release", "CentOS Linux release 7.3.1611 (Core)\n"),
        ("/etc/redhat-release", "CentOS Linux release 7.3.1611 (Core)\n"),
        ("/boot/grub2/grub.cfg", centos7_grub_cfg([CENTOS_NEW, CENTOS_OLD])),
        ("/boot/grub2/grubenv", grubenv(saved_entry=f"CentOS Linux ({CENTOS_OLD}) 7 (Core)")),
    ),
)

#: A TripleO whole-disk image: root on LVM, /boot on its own partition, BLS entries, no saved entry.
TRIPLEO = ImageSpec(
    name="tripleo-lvm",
    os_release=os_release("rhel", "9.2", "Red Hat Enterprise Linux"),
    kernels=(TRIPLEO_KERNEL,),
    rpm_kernels=(("kernel-core", TRIPLEO_KERNEL),),
    files=(
        ("/etc/redhat-release", "Red Hat Enterprise Linux release 9.2 (Plow)\n"),
        (f"/boot/loader/entries/{MACHINE_ID}-{TRIPLEO_KERNEL}.conf", bls_entry(TRIPLEO_KERNEL, "RHEL")),
        ("/boot/grub2/grubenv", grubenv(kernelopts="root=/dev/mapper/vg-root ro")),
    ),
    layout="lvm",
    size_mib=512,
)

UBUNTU = ImageSpec(
    name="ubuntu2204",
    os_release=os_release("ubuntu", "22.04", "Ubuntu"),
    kernels=(UBUNTU_KERNEL,),
)

NO_KERNEL = ImageSpec(
    name="rocky-no-kernel",
    os_release=os_release("rocky", "8.6", "Rocky Linux"),
    files=(("/etc/redhat-release", "Rocky Linux release 8.6 (Green Obsidian)\n"),),
)

ALL = [ROCKY8, CENTOS73, TRIPLEO, UBUNTU, NO_KERNEL]
