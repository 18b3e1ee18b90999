"""Sans-IO iSCSI target protocol (RFC 7143), in the style of h11.

Nothing here does I/O or imports asyncio: :class:`TargetConnection` turns received bytes into
events (:class:`CommandReady`, :class:`TaskManagement`, :class:`SessionStarted`,
:class:`ConnectionClosed`) and queues the bytes to send. ``iscsikit.target.server`` is the
asyncio driver.

Example, with the tiny sans-IO initiator used by the tests::

    >>> from iscsikit.target.proto import *
    >>> directory = TargetDirectory({"iqn.2026-01.test:t": TargetInfo("iqn.2026-01.test:t")})
    >>> conn = TargetConnection(directory, SessionTable(), PortalInfo("127.0.0.1", 3260, 1))
    >>> ini = InitiatorConnection("iqn.2026-01.test:i", target="iqn.2026-01.test:t")
    >>> conn.receive_data(ini.login_request())
    >>> conn.next_event()  # doctest: +ELLIPSIS
    SessionStarted(session=Session(tsih=1, ...), replaced=None)
"""

from iscsikit.target.proto.chap import ChapCredentials
from iscsikit.target.proto.connection import (
    NEED_DATA,
    CommandReady,
    ConnectionClosed,
    SessionStarted,
    TargetConnection,
    TaskManagement,
)
from iscsikit.target.proto.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from iscsikit.target.proto.initiator import InitiatorConnection
from iscsikit.target.proto.keys import SessionParams, TargetLimits
from iscsikit.target.proto.session import (
    AuthConfig,
    InitiatorAcl,
    PortalInfo,
    Session,
    SessionTable,
    TargetDirectory,
    TargetInfo,
)
from iscsikit.target.proto.task import Task, TaskState

__all__ = [
    "NEED_DATA",
    "AuthConfig",
    "ChapCredentials",
    "CommandReady",
    "ConnectionClosed",
    "InitiatorAcl",
    "InitiatorConnection",
    "LocalProtocolError",
    "PortalInfo",
    "ProtocolError",
    "RemoteProtocolError",
    "Session",
    "SessionParams",
    "SessionStarted",
    "SessionTable",
    "TargetConnection",
    "TargetDirectory",
    "TargetInfo",
    "TargetLimits",
    "Task",
    "TaskManagement",
    "TaskState",
]
