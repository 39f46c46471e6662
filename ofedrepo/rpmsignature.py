"""Checking an RPM package's signature against a distro's keys, as dnf does with a repository's ``gpgkey``.

Packages from distro mirrors (kernel-devel) are trusted on their signature, not on the mirror: a repodata
checksum only proves that the mirror served what its own metadata says.
"""

import re
import tempfile
from pathlib import Path

from ofedrepo.errors import InvalidInput, ToolFailed
from ofedrepo.process import clean_environment, run

#: ``rpmkeys -Kv``'s line for a signature it verified: ``Header V4 RSA/SHA512 Signature, key ID 892d82a2: OK``.
_VERIFIED_KEY = re.compile(r"Signature, key ID ([0-9a-f]+): OK$", re.MULTILINE)


def verify_signature(path: Path, keys: list[Path], scratch: Path) -> str:
    """Check that ``path`` is signed by one of ``keys`` (armoured public key files) and that its digests hold,
    as dnf does with a repository's ``gpgkey``; return the signing key's ID. ``InvalidInput`` says why not.

    ``rpmkeys`` with a keyring of its own (a fresh database under ``scratch``): the host's keyring is not
    ours to trust, and ``_pkgverify_level all`` makes an unsigned package fail as a badly signed one does."""
    with tempfile.TemporaryDirectory(prefix="keyring-", dir=scratch) as database:
        environment = clean_environment(Path(database))
        base = ["rpmkeys", "--dbpath", database]
        for key in keys:
            try:
                run([*base, "--import", str(key)], env=environment, timeout=60)
            except ToolFailed as error:
                raise InvalidInput(f"the key {key} cannot be imported: {error.output.strip()[:200]}") from None
        try:
            output = run(
                [*base, "--define", "_pkgverify_level all", "--checksig", "-v", str(path)], env=environment, timeout=300
            )
        except ToolFailed:
            raise InvalidInput(
                f"{path.name}: bad signature (not signed by the configured gpgkey, or altered)"
            ) from None
    match = _VERIFIED_KEY.search(output)
    if match is None:
        raise InvalidInput(f"{path.name}: bad signature (no signature rpmkeys verified)")
    return match.group(1)
