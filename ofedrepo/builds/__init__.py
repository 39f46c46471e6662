"""Builds: add-kernel-support runs that turn a bundle and a kernel into a published version.

- ``requests``: a client's request (a kernel or an image): which bundle fits, the build to share or queue,
  build state, logs and cancel.
- ``kernel_sources``: the kernel tree to build against: local, cached, or fetched as ``kernel-devel`` from
  a yum repository.
- ``collector``: what the deployment's database knows, for ``/metrics``.

The worker side (claiming, running the script, publishing) lives in ``workers/``.
"""
