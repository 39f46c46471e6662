"""The spec of regenerated metadata packages: tokens only, nothing from a package's free text."""

from dataclasses import replace
from pathlib import Path

import pytest

from ofedrepo.errors import InvalidInput
from ofedrepo.repos.metapackages import render_spec, rpmbuild_argv
from ofedrepo.repos.packageset import Rewrite
from ofedrepo.rpmfile import Dependency, PackageHeader

K = "4.18.0-372.26.1.el8_6.x86_64"


def rewrite(name: str = "mlnx-ofed-hypervisor", version: str = "5.8", requires: tuple[Dependency, ...] = ()) -> Rewrite:
    original = PackageHeader(
        name, version, "3.0.7.0.rhel8.6", "noarch", (), "abcd", epoch=None,
        provides=(Dependency(name, "=", f"{version}-3.0.7.0.rhel8.6"), Dependency("mlnx-ofed-basic-compat")),
        obsoletes=(Dependency("rdma"),),
    )  # fmt: skip
    return Rewrite("k", original, requires or (Dependency("iser", "=", "5.8-OFED.1.kver.x"),), ("kmod-iser → iser",))


def test_the_spec_keeps_name_version_provides_and_obsoletes_and_marks_the_kernel() -> None:
    spec = render_spec([rewrite()], K)
    assert "%package -n mlnx-ofed-hypervisor\n" in spec
    assert "Version: 5.8\n" in spec and f"Release: 3.0.7.0.rhel8.6.kver.{K.replace('-', '_')}\n" in spec
    assert "Provides: mlnx-ofed-basic-compat\n" in spec and "Provides: mlnx-ofed-hypervisor " not in spec
    assert "Obsoletes: rdma\n" in spec and "Requires: iser = 5.8-OFED.1.kver.x\n" in spec
    assert "BuildArch: noarch" in spec and "%post" not in spec  # no scriptlets: nothing runs from the bundle


@pytest.mark.parametrize("hostile", ["x%(touch /tmp/pwned)", "a b", "x\n%post\nrm -rf /", "x'y", "x%{expand:foo}"])
def test_names_or_versions_that_could_inject_into_the_spec_are_refused(hostile: str) -> None:
    with pytest.raises(InvalidInput, match="not a usable name or version"):
        render_spec([rewrite(name=hostile)], K)
    with pytest.raises(InvalidInput, match="not a usable name or version"):
        render_spec([rewrite(requires=(Dependency("iser", ">=", hostile),))], K)
    quoted = rewrite()  # a requirement that was dropped is still quoted in the description
    original = replace(quoted.original, requires=(Dependency(f"kmod-{hostile}"),))
    with pytest.raises(InvalidInput, match="not a usable name or version"):
        render_spec([Rewrite("k", original, (), ("dropped",))], K)


def test_rpmbuild_takes_nothing_from_the_host() -> None:
    argv = rpmbuild_argv(Path("/t"), Path("/t/spec"))
    assert argv[:3] == ["rpmbuild", "-bb", "--target"] and "_dbpath /t/rpmdb" in argv and "--nodeps" in argv


def test_an_arch_metapackage_is_regenerated_for_its_own_arch() -> None:
    doca = rewrite(name="doca-ofed", version="3.2.0")
    doca = replace(doca, original=replace(doca.original, arch="x86_64"))
    spec = render_spec([doca], K, "x86_64")
    assert "BuildArch" not in spec and "%package -n doca-ofed\n" in spec
    assert rpmbuild_argv(Path("/t"), Path("/t/spec"), "x86_64")[2:4] == ["--target", "x86_64"]
