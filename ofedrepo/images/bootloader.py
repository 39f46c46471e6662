"""Which installed kernel an image boots, decided from its boot loader configuration as GRUB would.

Pure: it reads texts already fetched from the image. The rules, first match wins:

1. BLS entries (``/boot/loader/entries/*.conf``, RHEL 8+): the entry ``grubenv``'s ``saved_entry`` names,
   else the first entry in GRUB's ``blscfg`` order (newest version first);
2. ``grub.cfg`` (RHEL 7): ``set default`` — an index, a title or an id, or ``${saved_entry}`` from grubenv
   — picks a ``menuentry`` whose ``linux`` line names the kernel;
3. ``/etc/sysconfig/kernel``'s ``DEFAULTKERNEL``: the newest kernel of that package;
4. the newest installed kernel.

A rule that names a kernel not installed in the image does not decide; the next rule is tried.
"""

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ofedrepo.kernel import KernelRelease, is_kernel_release, parse_kernel_release

_VMLINUZ = re.compile(r"(?:^|/)vmlinuz-(?P<kernel>\S+)$")
_MENUENTRY = re.compile(r"^\s*menuentry\s+(?P<rest>.*)\{\s*$")
_LINUX = re.compile(r"^\s*linux(?:16|efi)?\s+(?P<image>\S+)")
_SET_DEFAULT = re.compile(r"^\s*set\s+default=(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class BootConfig:
    """The boot-related files of an image, as text (absent files are None or empty)."""

    bls_entries: Mapping[str, str] = field(default_factory=dict)
    grubenv: str | None = None
    grub_cfg: str | None = None
    sysconfig_kernel: str | None = None


@dataclass(frozen=True)
class DefaultKernel:
    kernel: KernelRelease
    rule: str


@dataclass(frozen=True)
class MenuEntry:
    title: str
    entry_id: str | None
    kernel: str | None


def parse_key_values(text: str) -> dict[str, str]:
    """``KEY=value`` lines (grubenv, sysconfig files); comments and padding are skipped."""
    values = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if equals and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return values


def bls_kernel(entry: str) -> str | None:
    """The kernel a BLS entry boots: its ``linux /vmlinuz-<K>`` line, else its ``version`` line."""
    fields: dict[str, str] = {}
    for line in entry.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key not in fields:
            fields[key] = value.strip()
    match = _VMLINUZ.search(fields.get("linux", ""))
    candidate = match.group("kernel") if match else fields.get("version")
    return candidate if candidate and is_kernel_release(candidate) else None


def grub_menu_entries(grub_cfg: str) -> list[MenuEntry]:
    """The ``menuentry`` blocks of a grub.cfg, in order, with the kernel each boots (submenus flattened)."""
    entries: list[MenuEntry] = []
    current: tuple[str, str | None] | None = None
    kernel: str | None = None
    for line in grub_cfg.splitlines():
        start = _MENUENTRY.match(line)
        if start:
            try:
                words = shlex.split(start.group("rest"))
            except ValueError:
                words = []
            if words:
                entry_id = None
                for index, word in enumerate(words[:-1]):
                    if word in ("$menuentry_id_option", "--id"):
                        entry_id = words[index + 1]
                current, kernel = (words[0], entry_id), None
            continue
        if current is None:
            continue
        linux = _LINUX.match(line)
        if linux and kernel is None:
            match = _VMLINUZ.search(linux.group("image"))
            kernel = match.group("kernel") if match and is_kernel_release(match.group("kernel")) else None
        elif line.strip() == "}":
            entries.append(MenuEntry(title=current[0], entry_id=current[1], kernel=kernel))
            current = None
    return entries


def grub_default(grub_cfg: str) -> str | None:
    """The value of ``set default``: ``${saved_entry}`` when any branch uses it, else the last literal."""
    values = [match.group("value").strip("\"'") for match in map(_SET_DEFAULT.match, grub_cfg.splitlines()) if match]
    if "${saved_entry}" in values:
        return "${saved_entry}"
    literals = [value for value in values if not value.startswith("${")]
    return literals[-1] if literals else None


def choose_default_kernel(
    config: BootConfig, installed: Sequence[KernelRelease], packages: Mapping[str, Sequence[KernelRelease]]
) -> DefaultKernel | None:
    """Apply the rules above; ``packages`` maps an rpm package name to the kernels it installed."""
    if not installed:
        return None
    by_text = {kernel.text: kernel for kernel in installed}
    saved_entry = parse_key_values(config.grubenv or "").get("saved_entry") or None
    for decision in (_from_bls(config, saved_entry, by_text), _from_grub_cfg(config, saved_entry, by_text)):
        if decision:
            return decision
    wanted = parse_key_values(config.sysconfig_kernel or "").get("DEFAULTKERNEL")
    if wanted and packages.get(wanted):
        candidates = [kernel for kernel in packages[wanted] if kernel.text in by_text]
        if candidates:
            return DefaultKernel(max(candidates), f"newest {wanted} package (DEFAULTKERNEL in /etc/sysconfig/kernel)")
    return DefaultKernel(max(installed), "newest installed kernel (no boot loader entry decided)")


def _from_bls(
    config: BootConfig, saved_entry: str | None, installed: Mapping[str, KernelRelease]
) -> DefaultKernel | None:
    kernels = {entry_id: kernel for entry_id, text in config.bls_entries.items() if (kernel := bls_kernel(text))}
    if saved_entry is not None and saved_entry in kernels:
        kernel = kernels[saved_entry]
        if kernel in installed:
            return DefaultKernel(installed[kernel], f"BLS entry {saved_entry} named by saved_entry in grubenv")
    # blscfg sorts entries newest first and boots the first one when no saved entry applies.
    booted = sorted((installed[kernel] for kernel in kernels.values() if kernel in installed), reverse=True)
    if booted:
        return DefaultKernel(booted[0], "newest BLS entry (grubenv names no existing entry)")
    return None


def _from_grub_cfg(
    config: BootConfig, saved_entry: str | None, installed: Mapping[str, KernelRelease]
) -> DefaultKernel | None:
    if not config.grub_cfg:
        return None
    entries = grub_menu_entries(config.grub_cfg)
    default = grub_default(config.grub_cfg)
    source = "grub.cfg default"
    if default == "${saved_entry}":
        default, source = saved_entry or "0", "grub.cfg default = saved_entry in grubenv"
    chosen = _menu_entry(entries, default or "0")
    if chosen and chosen.kernel is not None and chosen.kernel in installed:
        return DefaultKernel(installed[chosen.kernel], f"{source} ({chosen.title!r})")
    return None


def _menu_entry(entries: Sequence[MenuEntry], selector: str) -> MenuEntry | None:
    """GRUB's lookup of ``default``: a number is an index, else a title or id (``a>b`` uses its last part)."""
    selector = selector.rpartition(">")[2]
    if selector.isdigit():
        index = int(selector)
        return entries[index] if index < len(entries) else None
    for entry in entries:
        if selector in (entry.title, entry.entry_id):
            return entry
    return None


def kernels_from_names(names: Sequence[str], prefix: str = "") -> list[KernelRelease]:
    """The valid kernel releases among ``names`` (directory or file names), after stripping ``prefix``.

    Anything else (``extra``, ``0-rescue-<machine-id>``, names with shell characters) is ignored: these
    names come from the image and are untrusted.
    """
    kernels = []
    for name in names:
        candidate = name[len(prefix) :] if name.startswith(prefix) else ""
        # The grammar admits "0-rescue-<machine-id>"; a real kernel version has at least major.minor.
        if is_kernel_release(candidate) and "rescue" not in candidate:
            kernel = parse_kernel_release(candidate)
            if "." in kernel.version:
                kernels.append(kernel)
    return kernels
