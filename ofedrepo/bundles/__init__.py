"""MLNX_OFED bundles: what a bundle is, and getting one onto disk safely.

- ``names`` (pure): bundle names and identity (OFED version, distro, arch), ``-ext`` and
  ``skip-distro-check`` included.
- ``archive``: safe extraction of tgz and ISO archives (headers surveyed first, links checked, limits).
- ``unpack``: an opened bundle: its root, layout (flat or split), library set and package list.
- ``store``: registered bundles, stored unpacked once per sha256, in the database.
"""
