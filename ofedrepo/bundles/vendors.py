"""Which vendor's module reads an input, a stored bundle or a tool's output (``ofedrepo.bundles.vendor``)."""

from collections.abc import Collection
from pathlib import Path

from ofedrepo.bundles.doca import DocaOfed
from ofedrepo.bundles.mlnx_ofed import SEED_PKGLIST, MlnxOfed
from ofedrepo.bundles.names import parse_bundle_name
from ofedrepo.bundles.vendor import Vendor
from ofedrepo.kinds import BundleKind

VENDORS: dict[BundleKind, Vendor] = {vendor.kind: vendor for vendor in (DocaOfed(), MlnxOfed())}
#: What no vendor recognises is read as an MLNX_OFED bundle, whose refusal says what a bundle must hold.
FALLBACK = VENDORS[BundleKind.MLNX_OFED]


def vendor_of(kind: BundleKind | str) -> Vendor:
    """The module of a stored bundle's kind."""
    return VENDORS[BundleKind(kind)]


def vendor_for_input(source: Path) -> Vendor:
    """The vendor whose input ``source`` is, by its content."""
    return next((vendor for vendor in VENDORS.values() if vendor.recognises(source)), FALLBACK)


def vendor_for_output(source: Path) -> Vendor:
    """The vendor whose rebuild tool made ``source``, by its content."""
    return next((vendor for vendor in VENDORS.values() if vendor.recognises_output(source)), FALLBACK)


def dib_package_list(bundle_name: str, package_names: Collection[str] | None) -> str:
    """``DIB_MLNX_OFED_PKGLIST`` for a version of ``bundle_name`` holding ``package_names``, as its vendor
    installs it; None (a version recorded before ofedrepo kept package names, all MLNX_OFED) gets the seed
    article's list."""
    if package_names is None:
        return " ".join(SEED_PKGLIST)
    return " ".join(vendor_of(parse_bundle_name(bundle_name).identity.kind).dib_packages(package_names))
