import pytest

from ofedrepo.errors import InvalidKernelRelease
from ofedrepo.kernel import is_kernel_release, parse_kernel_release, sort_kernels


@pytest.mark.parametrize(
    ("text", "version", "release", "arch", "dist"),
    [
        ("3.10.0-514.el7.x86_64", "3.10.0", "514.el7", "x86_64", "el7"),
        ("4.18.0-372.26.1.el8_6.x86_64", "4.18.0", "372.26.1.el8_6", "x86_64", "el8_6"),
        ("5.14.0-284.11.1.el9_2.aarch64", "5.14.0", "284.11.1.el9_2", "aarch64", "el9_2"),
        ("5.4.17-2136.300.7.el8uek.x86_64", "5.4.17", "2136.300.7.el8uek", "x86_64", "el8uek"),
        ("6.1.0-56-amd64", "6.1.0", "56-amd64", None, None),
    ],
)
def test_parses_real_kernel_releases(text: str, version: str, release: str, arch: str | None, dist: str | None) -> None:
    kernel = parse_kernel_release(text)
    assert (kernel.version, kernel.release, kernel.arch, kernel.dist_tag) == (version, release, arch, dist)
    assert str(kernel) == text


def test_flavor_suffix_is_kept_apart() -> None:
    kernel = parse_kernel_release("4.18.0-372.26.1.el8_6.x86_64+debug")
    assert (kernel.arch, kernel.flavor) == ("x86_64", "debug")


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "4.18.0-372.el8.x86_64;rm -rf /",
        "$(reboot)",
        "4.18.0-`id`",
        "../../etc/passwd",
        "4.18.0-372/../../x",
        "4.18.0-372..x86_64",
        "4.18.0 -372.el8",
        "4.18.0-372.el8\x00.x86_64",
        "4.18.0-372.el8\n",
        "4.18.0-372.el８",
        "4.18.0-" + "1" * 130,
        "-372.el8",
        "4.18.0",
        ".4.18.0-1",
    ],
)
def test_rejects_hostile_strings(hostile: str) -> None:
    with pytest.raises(InvalidKernelRelease, match="kernel release"):
        parse_kernel_release(hostile)
    assert not is_kernel_release(hostile)


def test_error_message_does_not_echo_control_characters() -> None:
    with pytest.raises(InvalidKernelRelease, match="invalid kernel release") as raised:
        parse_kernel_release("4.18.0-1\x1b[31m")
    assert "\x1b" not in str(raised.value)


def test_orders_by_rpm_version_not_by_string() -> None:
    ordered = sort_kernels(
        [
            "4.18.0-372.26.1.el8_6.x86_64",
            "4.18.0-372.9.1.el8_6.x86_64",
            "4.18.0-80.el8.x86_64",
            "4.18.0-425.3.1.el8.x86_64",
        ]
    )
    assert [kernel.text for kernel in ordered] == [
        "4.18.0-80.el8.x86_64",
        "4.18.0-372.9.1.el8_6.x86_64",
        "4.18.0-372.26.1.el8_6.x86_64",
        "4.18.0-425.3.1.el8.x86_64",
    ]


def test_el_version_and_release_number() -> None:
    assert parse_kernel_release("4.18.0-372.26.1.el8_6.x86_64").el_version == (8, 6)
    assert parse_kernel_release("3.10.0-514.el7.x86_64").el_version == (7, None)
    assert parse_kernel_release("3.10.0-514.el7.x86_64").release_number == 514


@pytest.mark.parametrize(
    "odd",
    ["5.14.0-362.8.1.el9_3.x86_64+rt+rt", "5.14.0-362.8.1.el9_3.x86_64+", "5.14.0-362.8.1.el9_3.x86_64+RT",
     "5.14.0-362.8.1.el9_3.x86_64+-", "5.14.0-362.8.1.el9_3.x86_64+rt.x86_64", "5.14.0-362.8.1.el9_3.x86_64+64k",
     "5.14.0-362.8.1.el9_3.x86_64+64k-debug"],
)  # fmt: skip
def test_only_the_flavours_el9_names_are_taken(odd: str) -> None:
    """A flavour is one the distribution builds (+rt, +64k, +debug and their debug kin); 64k only on aarch64."""
    with pytest.raises(InvalidKernelRelease, match="flavour|64k-page kernels are aarch64"):
        parse_kernel_release(odd)
    assert parse_kernel_release("5.14.0-362.8.1.el9_3.aarch64+64k-debug").flavor == "64k-debug"
