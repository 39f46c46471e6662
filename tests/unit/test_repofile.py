from ofedrepo.bundles.vendors import dib_package_list
from ofedrepo.repos.repofile import (
    RepoLocation,
    dib_environment,
    render_repo_file,
    render_shell_exports,
    render_tripleo_yaml,
)

SEED = "mlnx-ofed-hypervisor mlnx-fw-updater"
LOCATION = RepoLocation(
    "http://repo.example:8000", "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64", "4.18.0-372.26.1.el8_6.x86_64", "latest"
)
TREE = "http://repo.example:8000/repos/MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64/4.18.0-372.26.1.el8_6.x86_64/latest"


def test_urls_follow_the_published_tree() -> None:
    assert LOCATION.url == TREE
    assert LOCATION.baseurl == TREE + "/RPMS"
    assert LOCATION.gpgkey == TREE + "/RPM-GPG-KEY-Mellanox"


def test_repo_file_is_what_the_dib_element_writes() -> None:
    text = render_repo_file(LOCATION, gpgcheck=True)
    assert f"baseurl={TREE}/RPMS\n" in text
    assert "gpgcheck=1\n" in text
    assert f"gpgkey={TREE}/RPM-GPG-KEY-Mellanox\n" in text
    assert text.startswith("[mlnx_ofed-5.8-3.0.7.0-rhel8.6-x86_64-4.18.0-372.26.1.el8_6.x86_64]\n")


def test_unsigned_repo_file_has_no_key() -> None:
    assert "gpgkey" not in render_repo_file(LOCATION, gpgcheck=False)


def test_dib_snippet() -> None:
    environment = dib_environment(LOCATION, "5.8-3", SEED)
    assert environment == {
        "DIB_MLNX_OFED_VERSION": "5.8-3",
        "DIB_MLNX_OFED_REPO": TREE,
        "DIB_MLNX_OFED_DELETE_REPO": "n",
        "DIB_MLNX_OFED_PKGLIST": "mlnx-ofed-hypervisor mlnx-fw-updater",
        "DIB_MLNX_OFED_REPO_FILE": TREE + "/mlnx-ofed.repo",
    }
    assert f"export DIB_MLNX_OFED_REPO='{TREE}'\n" in render_shell_exports(environment)
    yaml = render_tripleo_yaml(environment)
    assert yaml.startswith("disk_images:\n  - imagename: overcloud-full\n    elements:\n      - mlnx-ofed\n")
    assert f'      DIB_MLNX_OFED_REPO: "{TREE}"\n' in yaml


def test_shell_quoting() -> None:
    assert render_shell_exports({"A": "it's"}) == "export A='it'\\''s'\n"


def test_the_dib_package_list_names_only_what_the_version_holds() -> None:
    def listed(names: list[str] | None) -> str:
        return dib_package_list(LOCATION.bundle_name, names)

    assert listed(["mlnx-ofed-hpc", "mlnx-ofed-hypervisor", "mlnx-fw-updater"]) == SEED
    assert listed(["mlnx-ofed-hpc", "mlnx-ofed-basic"]) == "mlnx-ofed-hpc"
    assert listed(["mlnx-ofa_kernel-modules", "mlnx-fw-updater"]) == "mlnx-ofa_kernel-modules mlnx-fw-updater"
    assert listed(None) == SEED  # a version published before names were kept
