"""The kinds of bundle ofedrepo rebuilds: one per vendor distribution of the OFED driver (pure).

Each kind has one module behind ``ofedrepo.bundles.vendor.Vendor`` (``ofedrepo.bundles.vendors`` picks it):
what the kind is stored as, shown as and asked for by is this enum's value, spelled nowhere else.
"""

from enum import StrEnum


class BundleKind(StrEnum):
    """NVIDIA's MLNX_OFED bundles (rebuilt with ``mlnx_add_kernel_support.sh``) and DOCA-OFED repositories
    (rebuilt with ``doca-kernel-support``), its successor."""

    MLNX_OFED = "mlnx_ofed"
    DOCA = "doca"
