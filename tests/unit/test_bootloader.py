from ofedrepo.images.bootloader import (
    BootConfig,
    bls_kernel,
    choose_default_kernel,
    grub_default,
    grub_menu_entries,
    kernels_from_names,
    parse_key_values,
)
from ofedrepo.kernel import parse_kernel_release
from synthetic.images import bls_entry, centos7_grub_cfg, grubenv

OLD, NEW = "4.18.0-372.9.1.el8.x86_64", "4.18.0-372.26.1.el8_6.x86_64"
C_OLD, C_NEW = "3.10.0-514.el7.x86_64", "3.10.0-514.26.2.el7.x86_64"
MID = "3f2b9a4c1e7d4b5a9c0d8e6f7a1b2c3d"


def kernels(*texts: str) -> list:
    return sorted(parse_kernel_release(text) for text in texts)


def bls(*releases: str) -> dict[str, str]:
    return {f"{MID}-{release}": bls_entry(release, "Rocky Linux") for release in releases}


def test_grubenv_and_sysconfig_values() -> None:
    assert parse_key_values(grubenv(saved_entry="abc", kernelopts="root=/dev/sda1 ro")) == {
        "saved_entry": "abc",
        "kernelopts": "root=/dev/sda1 ro",
    }
    assert parse_key_values('# comment\nDEFAULTKERNEL="kernel-core"\n') == {"DEFAULTKERNEL": "kernel-core"}


def test_bls_entry_kernel_from_linux_line_or_version() -> None:
    assert bls_kernel(bls_entry(NEW, "x")) == NEW
    assert bls_kernel(f"title x\nversion {OLD}\n") == OLD
    assert bls_kernel("title rescue\nlinux /vmlinuz-$(reboot)\n") is None


def test_saved_entry_names_the_older_bls_entry() -> None:
    config = BootConfig(bls_entries=bls(OLD, NEW), grubenv=grubenv(saved_entry=f"{MID}-{OLD}"))
    decision = choose_default_kernel(config, kernels(OLD, NEW), {})
    assert decision is not None and decision.kernel.text == OLD
    assert "saved_entry" in decision.rule


def test_without_saved_entry_blscfg_boots_the_newest_entry() -> None:
    for environment in (None, grubenv(), grubenv(saved_entry="gone-entry")):
        decision = choose_default_kernel(
            BootConfig(bls_entries=bls(OLD, NEW), grubenv=environment), kernels(OLD, NEW), {}
        )
        assert decision is not None and decision.kernel.text == NEW and decision.rule.startswith("newest BLS entry")


def test_an_entry_for_a_kernel_not_installed_does_not_decide() -> None:
    config = BootConfig(bls_entries=bls(NEW), grubenv=grubenv(saved_entry=f"{MID}-{NEW}"))
    decision = choose_default_kernel(config, kernels(OLD), {})
    assert decision is not None and decision.kernel.text == OLD and decision.rule.startswith("newest installed")


def test_grub_cfg_menu_entries_and_default() -> None:
    cfg = centos7_grub_cfg([C_NEW, C_OLD])
    entries = grub_menu_entries(cfg)
    assert [entry.kernel for entry in entries] == [C_NEW, C_OLD]
    assert entries[1].title == f"CentOS Linux ({C_OLD}) 7 (Core)"
    assert entries[1].entry_id == f"gnulinux-{C_OLD}-advanced-1c1d"
    assert grub_default(cfg) == "${saved_entry}"
    assert grub_default('set default="1"\n') == "1"
    assert grub_default("set timeout=5\n") is None


def test_grub_cfg_saved_entry_by_title_index_or_id() -> None:
    cfg = centos7_grub_cfg([C_NEW, C_OLD])
    for saved in (f"CentOS Linux ({C_OLD}) 7 (Core)", "1", f"gnulinux-{C_OLD}-advanced-1c1d"):
        config = BootConfig(grub_cfg=cfg, grubenv=grubenv(saved_entry=saved))
        decision = choose_default_kernel(config, kernels(C_OLD, C_NEW), {})
        assert decision is not None and decision.kernel.text == C_OLD, saved
        assert decision.rule.startswith("grub.cfg default = saved_entry")
    no_saved = choose_default_kernel(BootConfig(grub_cfg=cfg), kernels(C_OLD, C_NEW), {})
    assert no_saved is not None and no_saved.kernel.text == C_NEW


def test_grub_cfg_literal_default_index() -> None:
    cfg = centos7_grub_cfg([C_NEW, C_OLD]).replace('set default="${saved_entry}"', 'set default="1"')
    cfg = cfg.replace('set default="${next_entry}"', 'set default="0"')
    decision = choose_default_kernel(BootConfig(grub_cfg=cfg), kernels(C_OLD, C_NEW), {})
    assert decision is not None and decision.kernel.text == C_OLD and decision.rule.startswith("grub.cfg default (")


def test_sysconfig_defaultkernel_picks_the_newest_of_that_package() -> None:
    uek = "5.4.17-2136.307.3.1.el8uek.x86_64"
    installed = kernels(OLD, NEW, uek)
    packages = {"kernel-uek": kernels(uek), "kernel-core": kernels(OLD, NEW)}
    config = BootConfig(sysconfig_kernel="UPDATEDEFAULT=yes\nDEFAULTKERNEL=kernel-core\n")
    decision = choose_default_kernel(config, installed, packages)
    assert decision is not None and decision.kernel.text == NEW and "DEFAULTKERNEL" in decision.rule


def test_newest_installed_kernel_is_the_last_resort() -> None:
    decision = choose_default_kernel(BootConfig(), kernels(NEW, OLD), {})
    assert decision is not None and decision.kernel.text == NEW and decision.rule.startswith("newest installed")
    assert choose_default_kernel(BootConfig(), [], {}) is None


def test_untrusted_names_that_are_not_kernels_are_ignored() -> None:
    names = [OLD, "extra", "$(reboot)", "0-rescue-3f2b9a4c1e7d4b5a", "../../etc", "weak-updates", NEW]
    assert [kernel.text for kernel in kernels_from_names(names)] == [OLD, NEW]
    assert [kernel.text for kernel in kernels_from_names([f"vmlinuz-{OLD}", "vmlinuz-0-rescue-ab12"], "vmlinuz-")] == [
        OLD
    ]
