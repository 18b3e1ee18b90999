"""Protocol errors of the sans-IO iSCSI core, modelled on h11's ``_util.py``.

``ProtocolError`` is abstract. The core raises :class:`LocalProtocolError` when the *caller*
(the server driving the core) misuses it, and :class:`RemoteProtocolError` when the peer sent
something the protocol forbids. Each error carries a hint for the answer the target should
give: ``reject_reason`` (a Reject PDU reason code, RFC 7143 11.17.1) while in full feature
phase, or ``login_status`` (status class << 8 | detail, RFC 7143 11.13.5) during login.
``close`` says whether the connection cannot go on (framing lost, login failed).
"""

from __future__ import annotations

from typing import NoReturn

__all__ = [
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ProtocolError(Exception):
    """Abstract base: something broke the iSCSI protocol. Do not raise it directly."""

    def __init__(
        self,
        message: str,
        *,
        reject_reason: int | None = None,
        login_status: int | None = None,
        close: bool = False,
        header: bytes = b"",
    ) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise LocalProtocolError or RemoteProtocolError")
        super().__init__(message)
        self.message = message
        #: Reject reason to send (0x04 protocol error, 0x09 invalid PDU field, ...), or None.
        self.reject_reason = reject_reason
        #: Login status to answer with (0x0201 authentication failure, ...), or None.
        self.login_status = login_status
        #: True when the connection must be closed after answering.
        self.close = close
        #: The offending PDU's header (BHS), echoed in a Reject's data segment.
        self.header = header

    def __str__(self) -> str:
        return self.message

    def _reraise_as_remote(self) -> NoReturn:
        raise RemoteProtocolError(
            self.message,
            reject_reason=self.reject_reason,
            login_status=self.login_status,
            close=self.close,
            header=self.header,
        ) from self


class LocalProtocolError(ProtocolError):
    """The caller of the core did something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The initiator sent something the protocol does not allow."""
