"""Every error iscsikit raises, and the one table of iscsiadm's exit codes.

iscsiadm reports failures only through its exit status (``include/iscsi_err.h``) and a line
on stderr. Peers match on error *text* ("exit status 21") or on scattered literals; here each
``ISCSI_ERR_*`` code is a class, so callers write ``except SessionExistsError`` and the
argv, exit code and stderr of the failed call travel with the exception.

Hierarchy::

    IscsikitError                      exit code 1 unless a subclass says otherwise
    +-- UsageError                     bad input from the user (flag, value): exit 2
    |   +-- InvalidNameError           a target/iface/portal name that cannot be used
    +-- CommandError                   an external command failed
    |   +-- CommandNotFoundError
    |   +-- CommandTimeoutError
    |   +-- IscsiadmError              one subclass per ISCSI_ERR_* code (table below)
    +-- DatabaseError                  open-iscsi DB problems (parse, lock, write)
    +-- SysfsError, DeviceError        kernel-facing lookups
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class IscsikitError(Exception):
    """Base of every error iscsikit raises on purpose.

    ``exit_code`` is what the CLI exits with; ``to_json()`` is what ``--json`` prints.
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        return {"name": type(self).__name__, "message": self.message}


class UsageError(IscsikitError):
    """The user gave a value iscsikit cannot use; the message names the value and where."""

    exit_code = 2


class InvalidNameError(UsageError, ValueError):
    """A target, initiator, iface or portal name that is malformed or unsafe as a path."""

    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {kind} {value!r}: {reason}")


# --------------------------------------------------------------------------------------
# External commands


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class CommandError(IscsikitError):
    """An external command exited with a status the caller did not accept."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        message: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        if message is None:
            message = f"{argv[0] if argv else '?'} exited with status {returncode}"
            if stderr.strip():
                message += f": {_tail(stderr)}"
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(argv=self.argv, returncode=self.returncode, stderr=self.stderr)
        return out


class CommandNotFoundError(CommandError):
    """The program is not installed where the runner looked (host, namespace or chroot)."""

    def __init__(self, argv: Sequence[str], where: str = "") -> None:
        where_txt = f" in {where}" if where else ""
        super().__init__(argv, 127, message=f"command not found{where_txt}: {argv[0]}")


class CommandTimeoutError(CommandError):
    """The command ran longer than its timeout; its whole process group was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, stdout: str = "", stderr: str = "") -> None:
        self.timeout = timeout
        msg = f"{argv[0]} timed out after {timeout:g} s and was killed (with its process group)"
        if stderr.strip():
            msg += f"; stderr so far: {_tail(stderr)}"
        super().__init__(argv, None, stdout, stderr, message=msg)


class IscsiadmError(CommandError):
    """iscsiadm exited non-zero. ``code``/``name`` are its ``ISCSI_ERR_*`` status.

    Build one with :meth:`from_result`, which picks the subclass for the code, so
    ``except NoObjectsFoundError`` catches "No records found" and nothing else.
    """

    code: ClassVar[int] = 1
    name: ClassVar[str] = "ISCSI_ERR"
    description: ClassVar[str] = "unknown error"
    #: Whether repeating the same call may succeed (lock contention, daemon busy, timeouts).
    retryable: ClassVar[bool] = False

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str = "", stderr: str = "") -> None:
        detail = _iscsiadm_detail(stderr) or self.description
        message = f"iscsiadm failed with {self.name} ({returncode}): {detail}"
        super().__init__(argv, returncode, stdout, stderr, message=message)

    @property
    def error_code(self) -> int:
        """The exit status as iscsiadm returned it (equal to ``code`` unless unknown)."""
        return self.returncode if self.returncode is not None else self.code

    @staticmethod
    def from_result(argv: Sequence[str], returncode: int, stdout: str = "", stderr: str = "") -> IscsiadmError:
        cls = ISCSIADM_ERRORS.get(returncode, IscsiadmError)
        return cls(argv, returncode, stdout, stderr)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(code=self.error_code, name=self.name, iscsi_message=self.description)
        return out


def _iscsiadm_detail(stderr: str) -> str:
    """The most telling stderr line: iscsiadm prints context first and the cause last."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln.removeprefix("iscsiadm: ") for ln in lines]
    return "; ".join(lines[-3:]) if lines else ""


#: exit code -> IscsiadmError subclass. The one error table: each class below registers itself.
ISCSIADM_ERRORS: dict[int, type[IscsiadmError]] = {}


def _register(cls: type[IscsiadmError]) -> type[IscsiadmError]:
    ISCSIADM_ERRORS[cls.code] = cls
    return cls


@_register
class IscsiadmUnknownError(IscsiadmError):
    """1 ISCSI_ERR: unknown error"""

    code = 1
    name = "ISCSI_ERR"
    description = "unknown error"


@_register
class SessionNotFoundError(IscsiadmError):
    """2 ISCSI_ERR_SESS_NOT_FOUND: session not found"""

    code = 2
    name = "ISCSI_ERR_SESS_NOT_FOUND"
    description = "session not found"


@_register
class NoMemoryError(IscsiadmError):
    """3 ISCSI_ERR_NOMEM: no available memory"""

    code = 3
    name = "ISCSI_ERR_NOMEM"
    description = "no available memory"
    retryable = True


@_register
class TransportError(IscsiadmError):
    """4 ISCSI_ERR_TRANS: encountered connection failure"""

    code = 4
    name = "ISCSI_ERR_TRANS"
    description = "encountered connection failure"
    retryable = True


@_register
class LoginError(IscsiadmError):
    """5 ISCSI_ERR_LOGIN: encountered iSCSI login failure"""

    code = 5
    name = "ISCSI_ERR_LOGIN"
    description = "encountered iSCSI login failure"
    retryable = True


@_register
class IdbmError(IscsiadmError):
    """6 ISCSI_ERR_IDBM: encountered iSCSI database failure"""

    code = 6
    name = "ISCSI_ERR_IDBM"
    description = "encountered iSCSI database failure"
    retryable = True


@_register
class InvalidParameterError(IscsiadmError):
    """7 ISCSI_ERR_INVAL: invalid parameter"""

    code = 7
    name = "ISCSI_ERR_INVAL"
    description = "invalid parameter"


@_register
class TransportTimeoutError(IscsiadmError):
    """8 ISCSI_ERR_TRANS_TIMEOUT: connection timed out"""

    code = 8
    name = "ISCSI_ERR_TRANS_TIMEOUT"
    description = "connection timed out"
    retryable = True


@_register
class InternalError(IscsiadmError):
    """9 ISCSI_ERR_INTERNAL: internal error"""

    code = 9
    name = "ISCSI_ERR_INTERNAL"
    description = "internal error"


@_register
class LogoutError(IscsiadmError):
    """10 ISCSI_ERR_LOGOUT: encountered iSCSI logout failure"""

    code = 10
    name = "ISCSI_ERR_LOGOUT"
    description = "encountered iSCSI logout failure"
    retryable = True


@_register
class PduTimeoutError(IscsiadmError):
    """11 ISCSI_ERR_PDU_TIMEOUT: iSCSI PDU timed out"""

    code = 11
    name = "ISCSI_ERR_PDU_TIMEOUT"
    description = "iSCSI PDU timed out"
    retryable = True


@_register
class TransportNotFoundError(IscsiadmError):
    """12 ISCSI_ERR_TRANS_NOT_FOUND: the transport module (iscsi_tcp) is not loaded."""

    code = 12
    name = "ISCSI_ERR_TRANS_NOT_FOUND"
    description = "iSCSI driver not found. Please make sure it is loaded, and retry the operation"


@_register
class AccessDeniedError(IscsiadmError):
    """13 ISCSI_ERR_ACCESS: daemon access denied"""

    code = 13
    name = "ISCSI_ERR_ACCESS"
    description = "daemon access denied"


@_register
class TransportCapsError(IscsiadmError):
    """14 ISCSI_ERR_TRANS_CAPS: iSCSI driver does not support requested capability."""

    code = 14
    name = "ISCSI_ERR_TRANS_CAPS"
    description = "iSCSI driver does not support requested capability."


@_register
class SessionExistsError(IscsiadmError):
    """15 ISCSI_ERR_SESS_EXISTS: session exists"""

    code = 15
    name = "ISCSI_ERR_SESS_EXISTS"
    description = "session exists"


@_register
class InvalidMgmtRequestError(IscsiadmError):
    """16 ISCSI_ERR_INVALID_MGMT_REQ: Unknown request"""

    code = 16
    name = "ISCSI_ERR_INVALID_MGMT_REQ"
    description = "Unknown request"


@_register
class IsnsUnavailableError(IscsiadmError):
    """17 ISCSI_ERR_ISNS_UNAVAILABLE: iSNS service not supported"""

    code = 17
    name = "ISCSI_ERR_ISNS_UNAVAILABLE"
    description = "iSNS service not supported"


@_register
class IscsidCommError(IscsiadmError):
    """18 ISCSI_ERR_ISCSID_COMM_ERR: could not communicate to iscsid"""

    code = 18
    name = "ISCSI_ERR_ISCSID_COMM_ERR"
    description = "could not communicate to iscsid"
    retryable = True


@_register
class FatalLoginError(IscsiadmError):
    """19 ISCSI_ERR_FATAL_LOGIN: encountered non-retryable iSCSI login failure"""

    code = 19
    name = "ISCSI_ERR_FATAL_LOGIN"
    description = "encountered non-retryable iSCSI login failure"


@_register
class IscsidNotConnectedError(IscsiadmError):
    """20 ISCSI_ERR_ISCSID_NOTCONN: could not connect to iscsid"""

    code = 20
    name = "ISCSI_ERR_ISCSID_NOTCONN"
    description = "could not connect to iscsid"
    retryable = True


@_register
class NoObjectsFoundError(IscsiadmError):
    """21 ISCSI_ERR_NO_OBJS_FOUND: no objects found"""

    code = 21
    name = "ISCSI_ERR_NO_OBJS_FOUND"
    description = "no objects found"


@_register
class SysfsLookupError(IscsiadmError):
    """22 ISCSI_ERR_SYSFS_LOOKUP: sysfs lookup failure"""

    code = 22
    name = "ISCSI_ERR_SYSFS_LOOKUP"
    description = "sysfs lookup failure"


@_register
class HostNotFoundError(IscsiadmError):
    """23 ISCSI_ERR_HOST_NOT_FOUND: host not found"""

    code = 23
    name = "ISCSI_ERR_HOST_NOT_FOUND"
    description = "host not found"


@_register
class LoginAuthFailedError(IscsiadmError):
    """24 ISCSI_ERR_LOGIN_AUTH_FAILED: iSCSI login failed due to authorization failure"""

    code = 24
    name = "ISCSI_ERR_LOGIN_AUTH_FAILED"
    description = "iSCSI login failed due to authorization failure"


@_register
class IsnsQueryError(IscsiadmError):
    """25 ISCSI_ERR_ISNS_QUERY: iSNS query failed"""

    code = 25
    name = "ISCSI_ERR_ISNS_QUERY"
    description = "iSNS query failed"
    retryable = True


@_register
class IsnsRegistrationError(IscsiadmError):
    """26 ISCSI_ERR_ISNS_REG_FAILED: iSNS registration failed"""

    code = 26
    name = "ISCSI_ERR_ISNS_REG_FAILED"
    description = "iSNS registration failed"
    retryable = True


@_register
class OperationNotSupportedError(IscsiadmError):
    """27 ISCSI_ERR_OP_NOT_SUPP: operation not supported"""

    code = 27
    name = "ISCSI_ERR_OP_NOT_SUPP"
    description = "operation not supported"


@_register
class BusyError(IscsiadmError):
    """28 ISCSI_ERR_BUSY: device or resource in use"""

    code = 28
    name = "ISCSI_ERR_BUSY"
    description = "device or resource in use"
    retryable = True


@_register
class TryAgainError(IscsiadmError):
    """29 ISCSI_ERR_AGAIN: operation failed but retry may succeed"""

    code = 29
    name = "ISCSI_ERR_AGAIN"
    description = "operation failed but retry may succeed"
    retryable = True


@_register
class UnknownDiscoveryTypeError(IscsiadmError):
    """30 ISCSI_ERR_UNKNOWN_DISCOVERY_TYPE: unknown discovery type"""

    code = 30
    name = "ISCSI_ERR_UNKNOWN_DISCOVERY_TYPE"
    description = "unknown discovery type"


@_register
class ChildTerminatedError(IscsiadmError):
    """31 ISCSI_ERR_CHILD_TERMINATED: child process terminated"""

    code = 31
    name = "ISCSI_ERR_CHILD_TERMINATED"
    description = "child process terminated"
    retryable = True


@_register
class SessionNotConnectedError(IscsiadmError):
    """32 ISCSI_ERR_SESSION_NOT_CONNECTED: target likely not connected"""

    code = 32
    name = "ISCSI_ERR_SESSION_NOT_CONNECTED"
    description = "target likely not connected"
    retryable = True


@_register
class RequestTimedOutError(IscsiadmError):
    """33 ISCSI_ERR_REQ_TIMEDOUT: iscsid request timed out"""

    code = 33
    name = "ISCSI_ERR_REQ_TIMEDOUT"
    description = "iscsid request timed out"
    retryable = True


# --------------------------------------------------------------------------------------
# Local subsystems


class DatabaseError(IscsikitError):
    """A problem with open-iscsi's persistent DB (nodes, send_targets, ifaces...)."""


class RecordParseError(DatabaseError):
    """A record file line iscsiadm would not accept; names the file and the line."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(path=self.path, line=self.line, reason=self.reason)
        return out


class LockTimeoutError(DatabaseError):
    """iscsiadm's DB lock could not be taken in time; nothing was written."""


class RecordNotFoundError(DatabaseError):
    """No node, discovery or iface record matched (iscsiadm says "No records found")."""


class RecordExistsError(DatabaseError):
    """A record to be created already exists (pass overwrite to reset it as iscsiadm does)."""


class RecordRejectedError(DatabaseError):
    """Writing this record would leave a file iscsiadm 2.1.8 refuses to read; nothing was written."""


class InvalidSettingError(UsageError):
    """A record key or value iscsiadm would refuse; the message names the valid choices."""

    def __init__(self, key: str, value: str, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"cannot set {key} = {value!r}: {reason}")

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(key=self.key, value=self.value, reason=self.reason)
        return out


class SysfsError(IscsikitError):
    """sysfs did not have what iscsikit expected (missing session, unreadable attribute)."""


class DeviceError(IscsikitError):
    """A block device did not appear, could not be flushed, or is in use."""


class DeviceTimeoutError(DeviceError):
    """The expected block device did not appear within the timeout."""


class ConfigError(UsageError):
    """The iscsikit config file has a bad key or value; names the file and the key."""


class NoSuchSessionError(SysfsError):
    """No iSCSI session with this SID exists in sysfs (it may have been logged out)."""

    def __init__(self, sid: int, sysfs_root: str = "/sys") -> None:
        self.sid = sid
        self.sysfs_root = sysfs_root
        super().__init__(f"no iSCSI session {sid} in {sysfs_root}/class/iscsi_session")

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(sid=self.sid)
        return out


class OutputParseError(IscsikitError):
    """A line of a tool's output (iscsiadm, multipath) that iscsikit cannot read; names the line."""

    def __init__(self, what: str, line_no: int, line: str, reason: str) -> None:
        self.what = what
        self.line_no = line_no
        self.line = line
        self.reason = reason
        super().__init__(f"{what}, line {line_no}: {reason}: {line!r}")


class DeviceBusyError(DeviceError):
    """The block device is mounted, open exclusively, or held by another device (dm, md)."""


class AttachmentError(IscsikitError):
    """A connector operation could not complete; ``volume_id`` and ``step`` say where it stopped."""

    def __init__(self, volume_id: str, step: str, message: str) -> None:
        self.volume_id = volume_id
        self.step = step
        super().__init__(f"volume {volume_id}: {step}: {message}")

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(volume_id=self.volume_id, step=self.step)
        return out


# --------------------------------------------------------------------------------------
# Cleanup (iscsikit.clean)


class BackupError(IscsikitError):
    """A clean backup tarball cannot be written or read, or is not one; names the file (and member)."""


class NotABackupError(BackupError, UsageError):
    """The file given as a backup does not exist or is not a tarball at all: bad input, exit 2."""


class RestoreConflictError(DatabaseError):
    """Restoring would overwrite records that changed since the backup; nothing was written.

    ``conflicts`` lists the DB-relative paths (and attachment files) that differ.
    """

    def __init__(self, message: str, conflicts: Sequence[str]) -> None:
        self.conflicts = list(conflicts)
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(conflicts=self.conflicts)
        return out


# --------------------------------------------------------------------------------------
# Replicated volumes (iscsikit.replica)


class ReplicaError(IscsikitError):
    """A replica server or the replicated controller failed; ``address`` names the replica if known."""

    def __init__(self, message: str, address: str | None = None) -> None:
        self.address = address
        self.reason = message  # without the address: for places that name the replica themselves
        super().__init__(f"replica {address}: {message}" if address else message)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(address=self.address)
        return out


class ReplicaProtocolError(ReplicaError):
    """A frame that breaks docs/replica-protocol.md; the message names the field and value."""


class ReplicaTimeoutError(ReplicaError):
    """A replica did not answer a request within its timeout (it is then failed)."""


class ReplicaRemoteError(ReplicaError):
    """A replica answered a request with an error status (``status`` is its name, e.g. ``ENOSPC``)."""

    def __init__(self, message: str, status: str, address: str | None = None) -> None:
        self.status = status
        super().__init__(f"{status}: {message}", address)


class ReplicaFencedError(ReplicaRemoteError):
    """A replica refused this controller's claim: a newer controller fenced it (for good)."""


class ReplicaPeerError(ReplicaError):
    """A rebuilding replica could not pull from its source replica (unreachable, refused, broken link)."""


class ReplicaAuthError(ReplicaError):
    """The shared-secret handshake with a replica failed (wrong or missing secret, old replica)."""


class VolumeStartError(ReplicaError):
    """The controller could not find a consistent set of replicas to serve the volume from."""


# --------------------------------------------------------------------------------------
# The throwaway VM (iscsikit.vm): kernel test tier and `iscsikit demo`


class VMError(IscsikitError):
    """The VM could not be started, died, or its agent could not run a request."""


class VMBootError(VMError):
    """The VM did not boot (or its agent did not get ready); carries the console tail."""

    def __init__(self, message: str, console_tail: str = "", console_log: object = None) -> None:
        self.console_tail = console_tail
        self.console_log = None if console_log is None else str(console_log)
        text = message
        if console_tail.strip():
            text += f"\nlast console lines:\n{console_tail}"
        if self.console_log:
            text += f"\n(full console log: {self.console_log})"
        super().__init__(text)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(console_log=self.console_log)
        return out


class VMTimeoutError(VMError):
    """A guest script (or the guest agent) did not finish in time; the message names which."""

    def __init__(self, message: str, stdout: str = "", stderr: str = "") -> None:
        self.stdout = stdout
        self.stderr = stderr
        if stderr.strip():
            message += f"; stderr so far: {_tail(stderr)}"
        super().__init__(message)


class GuestCommandError(VMError):
    """A script run in the VM exited non-zero (``GuestResult.check()`` / ``run(check=True)``)."""

    def __init__(self, command: str, returncode: int, stdout: str = "", stderr: str = "") -> None:
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        head = command.strip().splitlines()[0] if command.strip() else "?"
        message = f"guest script exited with status {returncode}: {head[:200]}"
        if stderr.strip():
            message += f"\nstderr: {_tail(stderr)}"
        elif stdout.strip():
            message += f"\nstdout: {_tail(stdout)}"
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(returncode=self.returncode, stderr=self.stderr)
        return out


class DemoStepError(IscsikitError):
    """A step of ``iscsikit demo`` found something wrong; the message says what (and where to look)."""


# --------------------------------------------------------------------------------------
# tgtadm (the tgt target's admin tool): errors by the message tgtd returns


class TgtadmError(CommandError):
    """tgtadm failed. ``reason`` is tgtd's message (``usr/tgtadm_error.h``), e.g. "can't find the target".

    :meth:`from_result` picks the subclass for the message, so ``except TgtNoTargetError``
    catches exactly that. tgtadm exits 22 for these errors.
    """

    reason_text: ClassVar[str] = ""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str = "", stderr: str = "") -> None:
        self.reason = _tgtadm_reason(stderr) or self.reason_text or "unknown error"
        super().__init__(argv, returncode, stdout, stderr, message=f"tgtadm failed ({returncode}): {self.reason}")

    @staticmethod
    def from_result(argv: Sequence[str], returncode: int, stdout: str = "", stderr: str = "") -> TgtadmError:
        reason = _tgtadm_reason(stderr)
        cls: type[TgtadmError] = TgtadmError
        if "tgt daemon" in reason or "connect to the tgt" in reason:
            cls = TgtdNotRunningError
        else:
            cls = TGTADM_ERRORS.get(reason, TgtadmError)
        return cls(argv, returncode, stdout, stderr)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(reason=self.reason)
        return out


def _tgtadm_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1].removeprefix("tgtadm: ").strip() if lines else ""


#: tgtd's error message -> TgtadmError subclass (filled by the classes below).
TGTADM_ERRORS: dict[str, type[TgtadmError]] = {}


def _tgt(cls: type[TgtadmError]) -> type[TgtadmError]:
    TGTADM_ERRORS[cls.reason_text] = cls
    return cls


class TgtdNotRunningError(TgtadmError):
    """tgtadm could not reach tgtd on its control port (not running, or another -C port)."""

    reason_text = "can't send the request to the tgt daemon"


@_tgt
class TgtUnknownError(TgtadmError):
    reason_text = "unknown error"


@_tgt
class TgtNoMemoryError(TgtadmError):
    reason_text = "out of memory"


@_tgt
class TgtNoDriverError(TgtadmError):
    reason_text = "can't find the driver"


@_tgt
class TgtNoTargetError(TgtadmError):
    reason_text = "can't find the target"


@_tgt
class TgtNoLunError(TgtadmError):
    reason_text = "can't find the logical unit"


@_tgt
class TgtNoSessionError(TgtadmError):
    reason_text = "can't find the session"


@_tgt
class TgtNoConnectionError(TgtadmError):
    reason_text = "can't find the connection"


@_tgt
class TgtNoBindingError(TgtadmError):
    reason_text = "can't find the binding"


@_tgt
class TgtTargetExistsError(TgtadmError):
    reason_text = "this target already exists"


@_tgt
class TgtBindingExistsError(TgtadmError):
    reason_text = "this binding already exists"


@_tgt
class TgtLunExistsError(TgtadmError):
    reason_text = "this logical unit number already exists"


@_tgt
class TgtAclExistsError(TgtadmError):
    reason_text = "this access control rule already exists"


@_tgt
class TgtAclNotFoundError(TgtadmError):
    reason_text = "this access control rule does not exist"


@_tgt
class TgtAccountExistsError(TgtadmError):
    reason_text = "this account already exists"


@_tgt
class TgtNoAccountError(TgtadmError):
    reason_text = "can't find the account"


@_tgt
class TgtTooManyAccountsError(TgtadmError):
    reason_text = "too many accounts"


@_tgt
class TgtInvalidRequestError(TgtadmError):
    reason_text = "invalid request"


@_tgt
class TgtOutgoingAccountExistsError(TgtadmError):
    reason_text = "this target already has an outgoing account"


@_tgt
class TgtTargetActiveError(TgtadmError):
    reason_text = "this target is still active"


@_tgt
class TgtLunActiveError(TgtadmError):
    reason_text = "this logical unit is still active"


@_tgt
class TgtDriverActiveError(TgtadmError):
    reason_text = "this driver is busy"


@_tgt
class TgtUnsupportedOperationError(TgtadmError):
    reason_text = "this operation isn't supported"


@_tgt
class TgtUnknownParamError(TgtadmError):
    reason_text = "unknown parameter"


@_tgt
class TgtPreventRemovalError(TgtadmError):
    reason_text = "this device has Prevent Removal set"
