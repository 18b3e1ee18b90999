"""iscsikit: the iSCSI toolkit for Linux operators and Kubernetes storage authors."""

__version__ = "0.1.0"
