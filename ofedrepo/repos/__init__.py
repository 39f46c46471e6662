"""Published yum repositories: one per (bundle, kernel), immutable numbered versions, ``latest``.

- ``packageset`` (pure): which of a bundle's packages belong in the repo of one kernel, and which metadata
  packages must be regenerated for it.
- ``metapackages``: those regenerated ``mlnx-ofed-<group>`` packages, built with ``rpmbuild``.
- ``verify``: every kernel module is built for the kernel (``vermagic``), and signed when asked.
- ``signing``: the site key, package and ``repomd.xml`` signatures.
- ``metadata``: the repodata, with the createrepo_c bindings.
- ``repofile`` (pure): ``.repo`` files and DIB/TripleO snippets.
- ``publish``: staging, the atomic rename, the version's record.
- ``queries``: repos and versions in the database, as clients see them.
- ``retention``: which versions, trees and scratch may go, and removing them.
"""
