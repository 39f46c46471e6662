"""The local runner's host checks: each refusal is one line saying what to do."""

from dataclasses import replace

from workers.preflight import HostFacts, local_runner_problem, parse_os_release

ROCKY8 = HostFacts(euid=0, lsb_id=None, os_id="rocky", os_id_like=("rhel", "centos", "fedora"), os_version="8.6",
                   missing_tools=())  # fmt: skip


def with_(**changes: object) -> HostFacts:
    return replace(ROCKY8, **changes)


def test_a_root_rocky_8_host_builds_rhel8_bundles() -> None:
    assert local_runner_problem(ROCKY8, "rhel8.6") is None


def test_refusals() -> None:
    debian = local_runner_problem(with_(lsb_id="debian", os_id="debian", os_id_like=()), "rhel8.6")
    assert debian and debian.startswith("this host is Debian (lsb_release)") and "podman" in debian
    assert "run the worker as root" in (local_runner_problem(with_(euid=1000), "rhel8.6") or "")
    assert "not an RPM distribution" in (local_runner_problem(with_(os_id="arch", os_id_like=()), "rhel8.6") or "")
    assert "EL9 but the bundle is for rhel8.6" in (local_runner_problem(with_(os_version="9.2"), "rhel8.6") or "")
    assert "rpmbuild, gcc" in (local_runner_problem(with_(missing_tools=("rpmbuild", "gcc")), "rhel8.6") or "")
    for problem in (debian, local_runner_problem(with_(euid=1000), "rhel8.6")):
        assert problem and "\n" not in problem


def test_os_release_parsing() -> None:
    text = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.6"\n# comment\n'
    assert parse_os_release(text) == {"NAME": "Rocky Linux", "ID": "rocky", "ID_LIKE": "rhel centos fedora",
                                      "VERSION_ID": "8.6"}  # fmt: skip
