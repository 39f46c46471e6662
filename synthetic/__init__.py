"""NVIDIA's files and tools as the public sources show them, made with the real rpmbuild: MLNX_OFED bundles and
their ``mlnx_add_kernel_support.sh`` (``bundle``), DOCA-OFED repositories and ``doca-kernel-support`` (``doca``),
kernel sources, and small disk images (``images``).

For the test suite and ``ofedrepo demo`` only: the service never imports this package (an import-linter contract
says so), so it cannot know it talks to a model. Each model cites its source (``vendor/__init__.py``,
``docs/testing.md``).
"""
