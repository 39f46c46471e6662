"""ofedrepo: MLNX_OFED kernel modules rebuilt for the kernel inside an image, published as yum repositories."""

__version__ = "0.1.0"
