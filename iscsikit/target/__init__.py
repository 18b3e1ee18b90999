"""iscsikit's built-in userspace iSCSI target (RFC 7143)."""
