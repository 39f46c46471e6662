"""Models of NVIDIA's own tools, installed into the synthetic bundles that tests build.

Each file here is copied into a bundle and runs from there (through rpmbuild, or as the bundle's
``mlnx_add_kernel_support.sh``, ``mlnxofedinstall``, ``install.pl`` or ``create_mlnx_ofed_installers.pl``),
so each is self-contained: the standard library (or core Perl) and the tools a build host has. The test
factory (``synthetic/bundle.py``) imports them for their constants. What they model, and
where they deliberately differ from NVIDIA's files, is written at the top of each.
"""
