from ofedrepo.rpmfile import module_kernels


def test_module_kernels_from_file_lists() -> None:
    files = [
        "/lib/modules/4.18.0-372.26.1.el8_6.x86_64/extra/mlnx-ofa_kernel/mlx5_core.ko",
        "/usr/lib/modules/4.18.0-372.26.1.el8_6.x86_64/extra/knem.ko",
        "/etc/infiniband/openib.conf",
        "/lib/modules",
        "/lib/modules/4.18.0-80.el8.x86_64",  # the directory itself installs no module
    ]
    assert module_kernels(files) == {"4.18.0-372.26.1.el8_6.x86_64"}
