"""open-iscsi's persistent database, read and written exactly as iscsiadm 2.1.8 does."""
