import pytest

from ofedrepo.bundles.names import BundleIdentity, identity_from_markers, parse_bundle_name
from ofedrepo.errors import InvalidBundleName, NotABundle

IDENTITY = BundleIdentity("5.8-3.0.7.0", "rhel8.6", "x86_64")


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64", False),
        ("MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64-ext", True),
        ("MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64-ext.tgz", True),
        ("MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64.iso", False),
        ("MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64.tar.gz", False),
    ],
)
def test_parses_names_with_and_without_ext(name: str, ext: bool) -> None:
    parsed = parse_bundle_name(name)
    assert parsed.identity == IDENTITY
    assert parsed.ext is ext
    assert parsed.identity.name == "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64"


def test_parses_other_versions() -> None:
    identity = parse_bundle_name("MLNX_OFED_LINUX-23.10-1.1.9.0-rhel9.2-aarch64").identity
    assert (identity.ofed_version, identity.distro, identity.arch) == ("23.10-1.1.9.0", "rhel9.2", "aarch64")


@pytest.mark.parametrize(
    "bad",
    [
        "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6",
        "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64/../x",
        "MLNX_EN-5.8-3.0.7.0-rhel8.6-x86_64",
        "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-amd64",
        "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64;id",
        "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8..6-x86_64",
        "MLNX_OFED_LINUX-5.8-3" + ".0" * 60 + "-rhel8.6-x86_64",  # a version no column or file name holds
    ],
)
def test_rejects_bad_names(bad: str) -> None:
    with pytest.raises(InvalidBundleName, match="is not an MLNX_OFED bundle name"):
        parse_bundle_name(bad)


def test_dib_version_is_the_short_form_of_the_seed_article() -> None:
    assert parse_bundle_name("MLNX_OFED_LINUX-4.0-2.0.0.1-rhel7.3-x86_64").identity.dib_version == "4.0-2"


def test_identity_from_marker_files() -> None:
    assert identity_from_markers("5.8-3.0.7.0\n", "rhel8.6\n", "x86_64\n") == IDENTITY
    assert identity_from_markers("MLNX_OFED_LINUX-5.8-3.0.7.0", "rhel8.6", "x86_64") == IDENTITY


def test_missing_markers_are_named() -> None:
    with pytest.raises(NotABundle, match=r"missing \.mlnx, \.arch"):
        identity_from_markers(None, "rhel8.6", None)


def test_marker_contents_are_validated() -> None:
    with pytest.raises(NotABundle, match="not an OFED version"):
        identity_from_markers("$(id)", "rhel8.6", "x86_64")
    with pytest.raises(NotABundle, match="not an architecture"):
        identity_from_markers("5.8-3.0.7.0", "rhel8.6", "../x")


def test_an_ext_bundle_whose_distro_file_says_skip_distro_check_is_placed_by_its_name() -> None:
    """What mlnx_add_kernel_support.sh --distro leaves: the distro lives in the directory or archive name."""
    ext = "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64-ext"
    names = ["unpack-1234", f"{ext}.iso"]
    assert identity_from_markers("5.8-3.0.7.0", "skip-distro-check\n", "x86_64", names) == IDENTITY
    assert identity_from_markers("5.8-3.0.7.0", "skip-distro-check", "x86_64", [ext]) == IDENTITY
    with pytest.raises(
        NotABundle, match="skip-distro-check .* name it MLNX_OFED_LINUX-5.8-3.0.7.0-<distro>-x86_64-ext"
    ):
        identity_from_markers("5.8-3.0.7.0", "skip-distro-check", "x86_64", ["upload-1", "ext.tgz"])
    other_version = "MLNX_OFED_LINUX-5.9-1.0.0.0-rhel8.6-x86_64-ext"
    with pytest.raises(NotABundle, match="no name it came with tells the distro"):
        identity_from_markers("5.8-3.0.7.0", "skip-distro-check", "x86_64", [other_version])
