"""errors.py: the ISCSI_ERR table, one class per code, caught by type."""

from __future__ import annotations

import pytest

from iscsikit import errors
from iscsikit.errors import (
    ISCSIADM_ERRORS,
    CommandError,
    IscsiadmError,
    NoObjectsFoundError,
    SessionExistsError,
)

# From include/iscsi_err.h (open-iscsi 2.1.8), as listed in the reference.
EXPECTED_NAMES = {
    1: "ISCSI_ERR", 2: "ISCSI_ERR_SESS_NOT_FOUND", 3: "ISCSI_ERR_NOMEM", 4: "ISCSI_ERR_TRANS",
    5: "ISCSI_ERR_LOGIN", 6: "ISCSI_ERR_IDBM", 7: "ISCSI_ERR_INVAL", 8: "ISCSI_ERR_TRANS_TIMEOUT",
    9: "ISCSI_ERR_INTERNAL", 10: "ISCSI_ERR_LOGOUT", 11: "ISCSI_ERR_PDU_TIMEOUT",
    12: "ISCSI_ERR_TRANS_NOT_FOUND", 13: "ISCSI_ERR_ACCESS", 14: "ISCSI_ERR_TRANS_CAPS",
    15: "ISCSI_ERR_SESS_EXISTS", 16: "ISCSI_ERR_INVALID_MGMT_REQ", 17: "ISCSI_ERR_ISNS_UNAVAILABLE",
    18: "ISCSI_ERR_ISCSID_COMM_ERR", 19: "ISCSI_ERR_FATAL_LOGIN", 20: "ISCSI_ERR_ISCSID_NOTCONN",
    21: "ISCSI_ERR_NO_OBJS_FOUND", 22: "ISCSI_ERR_SYSFS_LOOKUP", 23: "ISCSI_ERR_HOST_NOT_FOUND",
    24: "ISCSI_ERR_LOGIN_AUTH_FAILED", 25: "ISCSI_ERR_ISNS_QUERY", 26: "ISCSI_ERR_ISNS_REG_FAILED",
    27: "ISCSI_ERR_OP_NOT_SUPP", 28: "ISCSI_ERR_BUSY", 29: "ISCSI_ERR_AGAIN",
    30: "ISCSI_ERR_UNKNOWN_DISCOVERY_TYPE", 31: "ISCSI_ERR_CHILD_TERMINATED",
    32: "ISCSI_ERR_SESSION_NOT_CONNECTED", 33: "ISCSI_ERR_REQ_TIMEDOUT",
}  # fmt: skip


def test_table_is_complete_and_distinct() -> None:
    assert {code: cls.name for code, cls in ISCSIADM_ERRORS.items()} == EXPECTED_NAMES
    assert len({cls for cls in ISCSIADM_ERRORS.values()}) == 33
    for code, cls in ISCSIADM_ERRORS.items():
        assert cls.code == code
        assert getattr(errors, cls.__name__) is cls
        assert issubclass(cls, IscsiadmError) and issubclass(cls, CommandError)


def test_from_result_picks_the_class_and_keeps_the_evidence() -> None:
    argv = ["iscsiadm", "-m", "node", "-T", "iqn.x:y", "--login"]
    stderr = "iscsiadm: Could not login\niscsiadm: initiator reported error (15 - session exists)\n"
    err = IscsiadmError.from_result(argv, 15, "out", stderr)
    assert isinstance(err, SessionExistsError)
    assert err.argv == argv and err.stdout == "out" and err.stderr == stderr
    assert err.error_code == 15 and err.name == "ISCSI_ERR_SESS_EXISTS"
    assert "session exists" in str(err) and "initiator reported error" in str(err)
    body = err.to_json()
    assert body["code"] == 15 and body["name"] == "ISCSI_ERR_SESS_EXISTS" and body["argv"] == argv


def test_caught_by_type() -> None:
    with pytest.raises(NoObjectsFoundError):
        raise IscsiadmError.from_result(["iscsiadm"], 21, "", "iscsiadm: No records found\n")


def test_unknown_code_is_generic_but_keeps_the_code() -> None:
    err = IscsiadmError.from_result(["iscsiadm"], 77, "", "strange\n")
    assert type(err) is IscsiadmError and err.error_code == 77


def test_retryable_only_where_safe() -> None:
    retryable = {code for code, cls in ISCSIADM_ERRORS.items() if cls.retryable}
    assert 6 in retryable and 29 in retryable  # DB lock contention, "retry may succeed"
    assert not retryable & {7, 15, 19, 21, 24}  # invalid, exists, fatal login, none, auth


def test_record_parse_error_names_file_and_line() -> None:
    err = errors.RecordParseError("/etc/iscsi/nodes/x/1.2.3.4,3260,1/default", 12, "no '=' separator")
    assert str(err) == "/etc/iscsi/nodes/x/1.2.3.4,3260,1/default:12: no '=' separator"
    assert err.to_json()["line"] == 12
