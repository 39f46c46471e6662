"""Checking add-kernel-support output before it is published: modules for the right kernel, nothing else.

Every package that installs into a kernel's module tree must install only into ``/lib/modules/<K>/``, and
every ``.ko`` in it must carry ``vermagic=<K> ...`` in its ELF ``.modinfo`` section: a module built against
other kernel sources loads nowhere, and DIB would bake it into an image that then lacks its network. When
module signing is configured (Secure Boot), every module must also end with the signature the kernel's
``sign-file`` appends, made with the configured key: a PKCS#7 (CMS) signature that verifies against the
configured certificate, or nodes enforcing Secure Boot with that certificate enrolled would refuse it (a
module signed with another key, or only marked as signed, is refused here). Packages are read with librpm
(header and cpio payload), modules with pyelftools, signatures with ``openssl cms -verify``; nothing is
installed.
"""

import io
import lzma
import os
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import rpm
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ofedrepo.errors import BuildFailed
from ofedrepo.rpmfile import module_kernels, open_payload

_MODULE_ROOTS = ("/lib/modules/", "/usr/lib/modules/")
MAX_MODULE_BYTES = 256 * 1024 * 1024
#: The last bytes of a module signed by the kernel's sign-file (include/linux/module_signature.h).
SIGNATURE_MAGIC = b"~Module signature appended~\n"
#: ``struct module_signature`` before the magic: algo, hash, id_type, signer_len, key_id_len, 3 pad bytes and
#: the signature's length, big-endian (include/linux/module_signature.h).
_MODULE_SIGNATURE = struct.Struct(">BBBBB3xI")
_PKEY_ID_PKCS7 = 2
_OPENSSL_SECONDS = 60


@dataclass(frozen=True)
class VerifiedPackages:
    packages: int
    modules: int


def vermagic(module: bytes) -> str | None:
    """The ``vermagic`` of a kernel module's ``.modinfo`` section, None when it has none."""
    try:
        section = ELFFile(io.BytesIO(module)).get_section_by_name(".modinfo")
    except ELFError:
        return None
    if section is None:
        return None
    for entry in section.data().split(b"\0"):
        if entry.startswith(b"vermagic="):
            return entry.removeprefix(b"vermagic=").decode("utf-8", "replace")
    return None


def _module_bytes(name: str, data: bytes) -> bytes:
    """The module, decompressed, never past ``MAX_MODULE_BYTES`` (a few KB of xz can claim gigabytes)."""
    if name.endswith(".ko.xz"):
        try:
            module = lzma.LZMADecompressor().decompress(data, max_length=MAX_MODULE_BYTES + 1)
        except lzma.LZMAError as error:
            raise BuildFailed(f"{name} is not a readable xz stream ({error})") from None
    elif name.endswith(".ko.gz"):
        try:
            module = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16).decompress(data, MAX_MODULE_BYTES + 1)
        except zlib.error as error:
            raise BuildFailed(f"{name} is not a readable gzip stream ({error})") from None
    else:
        module = data
    if len(module) > MAX_MODULE_BYTES:
        raise BuildFailed(f"{name} decompresses to more than {MAX_MODULE_BYTES} bytes")
    return module


def signature_problem(module: bytes, certificate: Path) -> str | None:
    """Why ``module`` is not signed by the key of ``certificate`` (DER or PEM), None when it is: the trailer
    sign-file appends is read, and its PKCS#7 signature verified over the module's other bytes by openssl
    (signer found by issuer and serial in that certificate alone; no chain, as the kernel checks none)."""
    if not module.endswith(SIGNATURE_MAGIC):
        return "is not signed"
    trailer_end = len(module) - len(SIGNATURE_MAGIC)
    trailer_start = trailer_end - _MODULE_SIGNATURE.size
    if trailer_start < 0:
        return "has a damaged signature trailer"
    *_, id_type, _, _, signature_length = _MODULE_SIGNATURE.unpack(module[trailer_start:trailer_end])
    if id_type != _PKEY_ID_PKCS7 or not 0 < signature_length <= trailer_start:
        return "has a signature that is not PKCS#7"
    signature = module[trailer_start - signature_length : trailer_start]
    content = module[: trailer_start - signature_length]
    reading, writing = os.pipe()
    try:
        with os.fdopen(writing, "wb") as pipe:
            pipe.write(signature)  # a few hundred bytes: the pipe holds them before openssl runs
        checked = subprocess.run(
            ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", f"/dev/fd/{reading}",
             "-content", "/dev/stdin", "-certfile", str(certificate), "-nointern", "-noverify", "-out", "/dev/null"],
            input=content, capture_output=True, pass_fds=(reading,), timeout=_OPENSSL_SECONDS, check=False,
        )  # fmt: skip
    finally:
        os.close(reading)
    return None if checked.returncode == 0 else f"is not signed by the key of {certificate.name}"


def verify_package(path: Path, kernel: str, certificate: Path | None = None) -> int:
    """Check one package; return how many modules it holds. ``BuildFailed`` names the offending file.
    ``certificate``: module signing is configured, every module must be signed by its key."""
    modules = 0
    with open_payload(path) as (header, archive):
        files = list(header[rpm.RPMTAG_FILENAMES])
        if not module_kernels(files):
            return 0
        for name in files:
            for root in _MODULE_ROOTS:
                if name.startswith(root) and name[len(root) :] and name[len(root) :].split("/", 1)[0] != kernel:
                    raise BuildFailed(f"{path.name}: {name} is not under {root}{kernel}/")
        for entry in archive:
            if not entry.name.endswith((".ko", ".ko.xz", ".ko.gz")):
                continue
            if entry.size > MAX_MODULE_BYTES:
                raise BuildFailed(f"{path.name}: {entry.name} is larger than {MAX_MODULE_BYTES} bytes")
            module = _module_bytes(f"{path.name}: {entry.name}", archive.read())
            problem = signature_problem(module, certificate) if certificate is not None else None
            if problem:
                raise BuildFailed(f"{path.name}: {entry.name} {problem}, though module signing is configured")
            magic = vermagic(module)
            if magic is None:
                raise BuildFailed(f"{path.name}: {entry.name} has no vermagic in its .modinfo section")
            if magic.split(" ", 1)[0] != kernel:
                raise BuildFailed(f"{path.name}: {entry.name} was built for {magic.split(' ', 1)[0]}, not {kernel}")
            modules += 1
    return modules


def verify_kernel_packages(packages: list[Path], kernel: str, certificate: Path | None = None) -> VerifiedPackages:
    """Check every package; at least one kernel module for ``kernel`` must be there."""
    checked = modules = 0
    for path in packages:
        found = verify_package(path, kernel, certificate)
        if found:
            checked += 1
            modules += found
    if modules == 0:
        raise BuildFailed(f"the output holds no kernel module for {kernel}")
    return VerifiedPackages(packages=checked, modules=modules)
