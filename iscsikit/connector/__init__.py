"""The connector library for CSI node plugins: ``connect``/``disconnect``/``expand``.

>>> from iscsikit.connector import Connector, VolumeSpec
>>> Connector(state_dir="/tmp/iscsikit-doc")  # doctest: +ELLIPSIS
<iscsikit.connector.connector.Connector object at ...>

See :mod:`iscsikit.connector.connector` and docs/connector.md.
"""

from iscsikit.connector.connector import Connector
from iscsikit.connector.spec import Attachment, PathInfo, Timeouts, VolumeSpec
from iscsikit.connector.state import StateError, StateStore
from iscsikit.iscsiadm import Chap

__all__ = ["Attachment", "Chap", "Connector", "PathInfo", "StateError", "StateStore", "Timeouts", "VolumeSpec"]
