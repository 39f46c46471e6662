"""What clients are handed: tree URLs, ``.repo`` files and the DIB snippet (pure text, no I/O).

DIB's ``mlnx-ofed`` element takes ``DIB_MLNX_OFED_REPO`` = the directory holding ``RPMS/`` and writes
``baseurl=$DIB_MLNX_OFED_REPO/RPMS``, ``gpgcheck=1``, ``gpgkey=$DIB_MLNX_OFED_REPO/RPM-GPG-KEY-Mellanox``;
its newer form takes ``DIB_MLNX_OFED_REPO_FILE``, the URL of a ready ``.repo`` file.
"""

from dataclasses import dataclass
from urllib.parse import quote

REPO_FILE_NAME = "mlnx-ofed.repo"
MELLANOX_KEY = "RPM-GPG-KEY-Mellanox"
SITE_KEY = "RPM-GPG-KEY-ofedrepo"
RPMS = "RPMS"


@dataclass(frozen=True)
class RepoLocation:
    """Where one version (a number, or ``latest``) of a repo is served."""

    base_url: str
    bundle_name: str
    kernel: str
    version: str

    @property
    def url(self) -> str:
        """The ``DIB_MLNX_OFED_REPO`` value: the directory that holds ``RPMS/``."""
        parts = ("repos", self.bundle_name, self.kernel, self.version)
        return self.base_url + "/" + "/".join(quote(part, safe="") for part in parts)

    @property
    def baseurl(self) -> str:
        return f"{self.url}/{RPMS}"

    @property
    def gpgkey(self) -> str:
        return f"{self.url}/{MELLANOX_KEY}"

    @property
    def repo_file_url(self) -> str:
        return f"{self.url}/{REPO_FILE_NAME}"


def repo_section_id(bundle_name: str, kernel: str) -> str:
    """A yum section id unique per (bundle, kernel): ``mlnx_ofed-5.8-3.0.7.0-rhel8.6-x86_64-<kernel>``."""
    return "mlnx_ofed-" + bundle_name.removeprefix("MLNX_OFED_LINUX-") + "-" + kernel


def render_repo_file(location: RepoLocation, gpgcheck: bool, repo_gpgcheck: bool = False) -> str:
    """A yum/dnf ``.repo`` file for ``location``."""
    lines = [
        f"[{repo_section_id(location.bundle_name, location.kernel)}]",
        f"name={location.bundle_name} for kernel {location.kernel} (ofedrepo, version {location.version})",
        f"baseurl={location.baseurl}",
        "enabled=1",
        f"gpgcheck={int(gpgcheck)}",
        f"repo_gpgcheck={int(repo_gpgcheck)}",
    ]
    if gpgcheck or repo_gpgcheck:
        lines.append(f"gpgkey={location.gpgkey}")
    return "\n".join(lines) + "\n"


def dib_environment(location: RepoLocation, dib_version: str, pkglist: str) -> dict[str, str]:
    """The ``DIB_MLNX_OFED_*`` variables for the ``mlnx-ofed`` element."""
    return {
        "DIB_MLNX_OFED_VERSION": dib_version,
        "DIB_MLNX_OFED_REPO": location.url,
        "DIB_MLNX_OFED_DELETE_REPO": "n",
        "DIB_MLNX_OFED_PKGLIST": pkglist,
        "DIB_MLNX_OFED_REPO_FILE": location.repo_file_url,
    }


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def render_shell_exports(environment: dict[str, str]) -> str:
    return "".join(f"export {name}={_shell_quote(value)}\n" for name, value in environment.items())


def render_tripleo_yaml(environment: dict[str, str], image_name: str = "overcloud-full") -> str:
    """A TripleO ``disk_images`` fragment adding the element, as in ``openstack overcloud image build``."""
    lines = ["disk_images:", f"  - imagename: {image_name}", "    elements:", "      - mlnx-ofed"]
    lines.append("    environment:")
    lines += [f'      {name}: "{value}"' for name, value in environment.items()]
    return "\n".join(lines) + "\n"
