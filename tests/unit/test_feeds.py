"""Which kernels of a feed get built: the newest few of each minor release, each one validated; and which of
its validators are kept."""

from ofedrepo.builds.feeds import (
    MAX_ETAG,
    MAX_FEED_KERNELS,
    MAX_REFUSALS_TOLD,
    kept,
    newest_per_minor,
    strong_last_modified,
)


def test_the_newest_of_each_minor_release_in_rpm_order() -> None:
    chosen, refused = newest_per_minor(
        [
            "4.18.0-372.9.1.el8_6.x86_64",
            "4.18.0-372.26.1.el8_6.x86_64",
            "4.18.0-372.32.1.el8_6.x86_64",
            "4.18.0-477.10.1.el8_8.x86_64",
            "4.18.0-477.10.1.el8_8.aarch64",
            "4.18.0-372.32.1.el8_6.x86_64",  # listed twice (two repositories' copies)
        ],
        keep=2,
    )
    assert [kernel.text for kernel in chosen] == [
        "4.18.0-372.26.1.el8_6.x86_64",
        "4.18.0-372.32.1.el8_6.x86_64",
        "4.18.0-477.10.1.el8_8.aarch64",
        "4.18.0-477.10.1.el8_8.x86_64",
    ]
    assert refused == []
    # UEK R6 (5.4.17) and R7 (5.15.0) both ship for Oracle Linux 8: two lines, each keeps its newest.
    uek = ["5.4.17-2136.300.7.el8uek.x86_64", "5.4.17-2136.307.3.1.el8uek.x86_64", "5.15.0-101.103.2.1.el8uek.x86_64"]
    chosen, refused = newest_per_minor(uek, keep=1)
    assert [kernel.text for kernel in chosen] == uek[1:] and refused == []


def test_flavours_and_rt_kernels_do_not_take_the_plain_kernels_places() -> None:
    """EL9's AppStream ships the plain aarch64 kernel-devel and kernel-64k-devel side by side (kernel.spec builds
    both); EL8's RT repository may be one feed with BaseOS. Each line keeps its own newest."""
    arm = [f"5.14.0-427.{update}.1.el9_4.aarch64{flavour}" for update in (13, 16, 18) for flavour in ("", "+64k")]
    chosen, _ = newest_per_minor(arm, keep=2)
    assert sorted(kernel.text for kernel in chosen) == sorted(arm[2:])
    el8 = [f"4.18.0-372.{update}.1.el8_6.x86_64" for update in (26, 32, 41)] + ["4.18.0-372.9.1.rt7.166.el8.x86_64"]
    chosen, _ = newest_per_minor(el8, keep=2)
    assert "4.18.0-372.9.1.rt7.166.el8.x86_64" in [kernel.text for kernel in chosen] and len(chosen) == 3


def test_strings_that_are_no_kernel_release_or_fit_no_minor_release_are_refused_with_a_reason() -> None:
    chosen, refused = newest_per_minor(["4.18.0-372.$(id).el8_6.x86_64", "6.1.0-13-amd64", "../etc"], keep=3)
    assert chosen == []
    assert len(refused) == 3 and "no RHEL minor release" in refused[1]


def test_a_last_modified_within_two_seconds_of_the_answer_is_no_validator() -> None:
    served = "Tue, 01 Dec 2026 21:40:10 GMT"
    assert strong_last_modified("Tue, 01 Dec 2026 21:40:00 GMT", served) == "Tue, 01 Dec 2026 21:40:00 GMT"
    assert strong_last_modified("Tue, 01 Dec 2026 21:40:09 GMT", served) is None
    assert strong_last_modified("yesterday", served) is None
    assert strong_last_modified(None, served) is None


def test_a_validator_is_kept_only_whole_and_as_a_header_can_carry_it() -> None:
    """The row's ETag column holds 256 characters: a longer ETag cut short would never match again, so it is
    not kept at all (and the feed is read unconditionally)."""
    assert MAX_ETAG == 256
    assert kept('"' + "e" * 254 + '"', MAX_ETAG) == '"' + "e" * 254 + '"'
    assert kept('"' + "e" * 300 + '"', MAX_ETAG) is None
    assert kept('"abc"\r\n X-Injected: 1', MAX_ETAG) is None
    assert kept('"caf\u00e9"', MAX_ETAG) is None
    assert kept(None, MAX_ETAG) is None


def test_a_feed_offers_a_bounded_number_of_kernels_the_newest() -> None:
    """A feed naming 50,000 minor releases was stored whole (1.4 MB) and would queue as many builds."""
    releases = [f"4.18.0-{minor}.1.1.el8_{minor}.x86_64" for minor in range(1, 1001)]
    chosen, refused = newest_per_minor([*releases, *(f"bad {index}" for index in range(100))], keep=3)
    assert len(chosen) == MAX_FEED_KERNELS and chosen[-1].text == releases[-1]
    assert len(refused) == MAX_REFUSALS_TOLD + 1 and refused[-1].startswith("and ")
