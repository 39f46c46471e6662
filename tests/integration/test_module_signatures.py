"""Secure Boot: a module counts as signed only when its PKCS#7 signature verifies against the configured
certificate, as a node with that certificate enrolled would check it (openssl, keys made by openssl)."""

import struct
from pathlib import Path

import pytest

from ofedrepo.repos.verify import SIGNATURE_MAGIC, signature_problem
from synthetic.bundle import make_module_signing_keys
from synthetic.vendor.kmod import kernel_module, signed

KERNEL = "5.14.0-570.12.1.el9_6.x86_64"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("module-keys")
    return make_module_signing_keys(root / "site"), make_module_signing_keys(root / "other", "someone else")


def test_a_module_signed_by_the_configured_key_verifies(keys: tuple[tuple[Path, Path], ...]) -> None:
    (private_key, certificate), _ = keys
    module = signed(kernel_module("mlx5_core", KERNEL), private_key, certificate)
    assert signature_problem(module, certificate) is None


def test_signatures_by_another_key_altered_modules_and_mere_markers_are_refused(
    keys: tuple[tuple[Path, Path], ...],
) -> None:
    (private_key, certificate), (other_key, other_certificate) = keys
    plain = kernel_module("mlx5_core", KERNEL)
    by_another = signed(plain, other_key, other_certificate)
    assert signature_problem(by_another, certificate) == "is not signed by the key of signing_key.x509"
    genuine = signed(plain, private_key, certificate)
    altered = genuine.replace(b"license=Dual BSD/GPL", b"license=Proprietary!", 1)
    assert signature_problem(altered, certificate) == "is not signed by the key of signing_key.x509"
    assert signature_problem(plain, certificate) == "is not signed"
    # The trailer's layout alone (a digest where PKCS#7 belongs) is what the earlier check took for signed.
    marker_only = plain + bytes(32) + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 32) + SIGNATURE_MAGIC
    assert signature_problem(marker_only, certificate) == "is not signed by the key of signing_key.x509"
    not_pkcs7 = plain + bytes(32) + struct.pack(">BBBBB3xI", 0, 0, 1, 0, 0, 32) + SIGNATURE_MAGIC
    assert signature_problem(not_pkcs7, certificate) == "has a signature that is not PKCS#7"
    too_long = plain + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 10**9) + SIGNATURE_MAGIC
    assert signature_problem(too_long, certificate) == "has a signature that is not PKCS#7"
