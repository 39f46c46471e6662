"""The site signing key and package signing.

add-kernel-support output is unsigned, and DIB's ``mlnx-ofed`` element writes ``gpgcheck=1``, so ofedrepo
signs those packages with a site key: generated once under ``<data_dir>/keys/`` (a private GnuPG home), or
imported from ``OFEDREPO_SIGNING_KEY_FILE``. Debian's rpm needs ``__gpg`` spelled out for ``rpmsign``.
"""

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ofedrepo import process
from ofedrepo.errors import InvalidInput, ToolFailed
from ofedrepo.storage import DataDir, exclusive_lock

GPG = "/usr/bin/gpg"
_FINGERPRINT_FILE = "site-key.fpr"
_BATCH = 100


@dataclass(frozen=True)
class SiteKey:
    """A usable signing key: its GnuPG home and fingerprint."""

    gnupg_home: Path
    fingerprint: str
    tool_home: Path

    def environment(self) -> dict[str, str]:
        return process.clean_environment(self.tool_home, {"GNUPGHOME": str(self.gnupg_home)})


def gpg_argv(*arguments: str) -> list[str]:
    """gpg, never asking a question and never touching a terminal."""
    return [GPG, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "", *arguments]


def rpmsign_argv(packages: list[Path], fingerprint: str) -> list[str]:
    """``rpmsign --addsign`` for several packages, with Debian's rpm told where gpg is."""
    return [
        "rpmsign",
        "--define",
        f"__gpg {GPG}",
        "--define",
        f"_gpg_name {fingerprint}",
        "--define",
        "_gpg_sign_cmd_extra_args --batch --no-tty --pinentry-mode loopback --passphrase ''",
        "--addsign",
        *[str(package) for package in packages],
    ]


def parse_colons(listing: str, record: str = "fpr") -> list[str]:
    """Field 10 of gpg's ``--with-colons`` records of one type (``fpr`` → fingerprints), in order."""
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith(f"{record}:")]


def key_ids(armored_keys: str, tool_home: Path) -> set[str]:
    """Every (sub)key ID in an armoured key block, read without importing it anywhere that matters."""
    with tempfile.TemporaryDirectory(dir=tool_home) as scratch:
        environment = process.clean_environment(tool_home, {"GNUPGHOME": scratch})
        listing = process.run(
            gpg_argv("--with-colons", "--import-options", "show-only", "--import"),
            env=environment,
            input_text=armored_keys,
        )
    return {fingerprint[-16:].lower() for fingerprint in parse_colons(listing)}


def site_key(data: DataDir, key_file: Path | None, uid: str) -> SiteKey:
    """The site key, created or imported on first use; safe when several processes start at once."""
    home = data.keys / "gnupg"
    fingerprint_file = data.keys / _FINGERPRINT_FILE
    with exclusive_lock(data.keys / ".lock"):
        if not fingerprint_file.exists():
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            environment = process.clean_environment(data.home, {"GNUPGHOME": str(home)})
            fingerprint = _import_key(key_file, environment) if key_file else _generate_key(uid, environment)
            fingerprint_file.write_text(fingerprint + "\n")
        fingerprint = fingerprint_file.read_text().strip()
    return SiteKey(gnupg_home=home, fingerprint=fingerprint, tool_home=data.home)


def _generate_key(uid: str, environment: dict[str, str]) -> str:
    process.run(gpg_argv("--quick-gen-key", uid, "rsa3072", "sign", "never"), env=environment)
    listing = process.run(gpg_argv("--with-colons", "--list-secret-keys", uid), env=environment)
    return parse_colons(listing)[0]


def _import_key(key_file: Path, environment: dict[str, str]) -> str:
    if not key_file.is_file():
        raise InvalidInput(f"OFEDREPO_SIGNING_KEY_FILE {key_file} does not exist")
    process.run(gpg_argv("--import", str(key_file)), env=environment)
    listing = process.run(
        gpg_argv("--with-colons", "--import-options", "show-only", "--import", str(key_file)),
        env=environment,
    )
    if not re.search(r"^sec:", listing, re.MULTILINE):
        raise InvalidInput(f"OFEDREPO_SIGNING_KEY_FILE {key_file} holds no secret key")
    return parse_colons(listing)[0]


def export_public_key(key: SiteKey) -> str:
    """The site key's public part, ASCII-armoured, as yum's ``gpgkey=`` wants it."""
    return process.run(gpg_argv("--armor", "--export", key.fingerprint), env=key.environment())


def sign_packages(packages: list[Path], key: SiteKey) -> None:
    """Sign ``packages`` in place (replacing any signature they carry)."""
    for start in range(0, len(packages), _BATCH):
        process.run(rpmsign_argv(packages[start : start + _BATCH], key.fingerprint), env=key.environment())


def sign_detached(path: Path, key: SiteKey) -> Path:
    """``<path>.asc``: an ASCII-armoured detached signature, what dnf's ``repo_gpgcheck`` verifies."""
    signature = path.with_name(path.name + ".asc")
    process.run(
        gpg_argv("--armor", "--local-user", key.fingerprint, "--detach-sign", "--output", str(signature), str(path)),
        env=key.environment(),
    )
    return signature


def agent_homes_under(root: Path) -> list[Path]:
    """The GnuPG homes under ``root`` that a running gpg-agent serves: gpg starts one per home (the site key's,
    a dnf keyring's) and leaves it running after the process that used it ended."""
    homes = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        if argv and argv[0].endswith(b"gpg-agent") and b"--homedir" in argv[:-1]:
            home = Path(os.fsdecode(argv[argv.index(b"--homedir") + 1]))
            if home.is_relative_to(root):
                homes.append(home)
    return homes


def stop_agents_under(root: Path) -> None:
    """Stop the gpg-agents of the homes under ``root`` (a service's data dir, the demo's directory) as it ends."""
    for home in agent_homes_under(root):
        try:
            stop = ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"]
            process.run(stop, env=process.clean_environment(home), timeout=30)
        except ToolFailed:
            pass  # it ended by itself meanwhile, or gpgconf is gone: nothing is left to stop
