#!/usr/bin/env python3
"""Writes and signs synthetic kernel modules; Source1 of every synthetic kernel source package.

``kmod.py write PATH NAME VERMAGIC`` writes a real ELF64 relocatable object (what a ``.ko`` is) whose
``.modinfo`` section carries ``vermagic=<VERMAGIC> ...``, as kbuild takes it from the kernel tree's
``UTS_RELEASE``. ``kmod.py sign PATH PRIVATE PUBLIC`` signs it as the kernel's ``scripts/sign-file`` does:
a detached PKCS#7 (CMS) signature in DER, SHA-256, without certificates or signed attributes (sign-file's
``CMS_NOCERTS | CMS_BINARY | CMS_NOSMIMECAP | CMS_NOATTR``, here by ``openssl cms -sign``), then
``struct module_signature`` (id_type PKEY_ID_PKCS7, the signature's length) and
``~Module signature appended~\\n``. PRIVATE is the key (PEM), PUBLIC the certificate (DER or PEM), as
``MODULE_SIGN_PRIV_KEY``/``MODULE_SIGN_PUB_KEY`` name them for the kernel packages' specs.
"""

import struct
import subprocess
import sys
from pathlib import Path

SIGNATURE_MAGIC = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2


def kernel_module(name: str, vermagic: str) -> bytes:
    modinfo = f"license=Dual BSD/GPL\0name={name}\0vermagic={vermagic} SMP mod_unload modversions \0".encode()
    text = b"\xc3"  # a lone `ret`, so the object has code like any module
    shstrtab = b"\0.text\0.modinfo\0.shstrtab\0"
    header_size = section_header_size = 64
    text_offset = header_size
    modinfo_offset = text_offset + len(text)
    shstrtab_offset = modinfo_offset + len(modinfo)
    section_headers_offset = (shstrtab_offset + len(shstrtab) + 7) & ~7
    elf_header = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit, little endian, version 1, System V ABI
        1, 62, 1, 0, 0, section_headers_offset,  # ET_REL, EM_X86_64, version, entry, phoff, shoff
        0, header_size, 0, 0, section_header_size, 4, 3,  # flags, sizes, 4 sections, shstrndx 3
    )  # fmt: skip

    def section(name_offset: int, kind: int, flags: int, offset: int, size: int, align: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_offset, kind, flags, 0, offset, size, 0, 0, align, 0)

    sections = [
        bytes(section_header_size),
        section(1, 1, 0x6, text_offset, len(text), 16),  # .text: PROGBITS, ALLOC|EXECINSTR
        section(7, 1, 0x2, modinfo_offset, len(modinfo), 1),  # .modinfo: PROGBITS, ALLOC
        section(16, 3, 0, shstrtab_offset, len(shstrtab), 1),  # .shstrtab: STRTAB
    ]
    body = elf_header + text + modinfo + shstrtab
    return body + bytes(section_headers_offset - len(body)) + b"".join(sections)


def signed(module: bytes, private_key: Path, certificate: Path) -> bytes:
    signature = subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap", "-md", "sha256",
         "-outform", "DER", "-signer", str(certificate), "-inkey", str(private_key)],
        input=module, capture_output=True, check=True,
    ).stdout  # fmt: skip
    trailer = struct.pack(">BBBBB3xI", 0, 0, PKEY_ID_PKCS7, 0, 0, len(signature))
    return module + signature + trailer + SIGNATURE_MAGIC


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) == 4:
        path = Path(argv[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(kernel_module(argv[2], argv[3]))
        return 0
    if argv[:1] == ["sign"] and len(argv) == 4:
        path = Path(argv[1])
        path.write_bytes(signed(path.read_bytes(), Path(argv[2]), Path(argv[3])))
        return 0
    sys.stderr.write("usage: kmod.py write PATH NAME VERMAGIC | kmod.py sign PATH PRIVATE_KEY PUBLIC_KEY\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
