"""Disk images: which kernel an overcloud image boots, and which MLNX_OFED distro it needs.

- ``probe``: the image file on the host, checked before anything boots on it (qcow2 header, backing files,
  sizes), through ``qemu-img``.
- ``appliance``: one libguestfs launch reads the facts out of one or more images (read-only, nothing
  mounted on the host), falling back to TCG when KVM fails.
- ``facts`` (pure): what those facts mean: distro, kernels, the default kernel and why.
- ``bootloader`` (pure): grubenv, BLS entries and ``grub.cfg``, as GRUB would read them.
- ``catalog``: images known by sha256, inspected once, in the database.
"""
