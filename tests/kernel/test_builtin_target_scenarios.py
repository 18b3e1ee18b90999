"""The initiator, connector and multipath scenarios written for tgtd, run against the built-in target.

The scenario functions are imported unchanged from their modules; this module only provides
the ``target`` / ``make_target`` fixtures they ask for, serving each target with
``iscsikit target serve`` in the guest instead of tgtd (see tests/kernel/test_builtin_target.py).
A subset is taken so the kernel tier stays within CI's time: the long parallel and
fault-injection connector scenarios run against tgtd only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.kernel import test_connector as connector
from tests.kernel import test_initiator as initiator
from tests.kernel import test_multipath as multipath
from tests.kernel.conftest import Guest, MiB
from tests.kernel.test_builtin_target import builtin_target, stop_builtin_targets


@pytest.fixture(params=["builtin"])
def target(request: pytest.FixtureRequest, guest: Guest) -> Iterator[Any]:
    if request.function.__module__ == multipath.__name__:
        t = builtin_target(
            guest, f"iqn.2026-11.io.iscsikit.test:mp{uuid.uuid4().hex[:6]}", [32 * MiB], portals=multipath.PORTALS
        )
    else:
        t = builtin_target(guest, f"iqn.2026-11.io.iscsikit.test:i{uuid.uuid4().hex[:6]}", [16 * MiB, 8 * MiB])
    yield t
    stop_builtin_targets(guest)


@pytest.fixture(params=["builtin"])
def make_target(request: pytest.FixtureRequest, guest: Guest) -> Iterator[Callable[..., Any]]:
    def make(**kw: Any) -> Any:
        return builtin_target(guest, f"iqn.2026-11.io.iscsikit.test:{uuid.uuid4().hex[:8]}", **kw)

    yield make
    stop_builtin_targets(guest)


test_initiator_discover_login_mkfs_logout = initiator.test_discover_login_wait_mkfs_mount_logout_nothing_left
test_initiator_logout_if_unused = initiator.test_logout_if_unused_keeps_a_mounted_session
test_initiator_logout_by_sid = initiator.test_logout_by_sid_when_node_records_are_gone
test_initiator_no_persist_discovery = initiator.test_no_persist_discovery_leaves_the_db_alone
test_initiator_session_list = initiator.test_session_list_matches_iscsiadm_and_records_captures
test_connector_connect_write_disconnect = connector.test_connect_write_disconnect_leaves_nothing
test_connector_disconnect_one_lun = connector.test_disconnecting_one_lun_keeps_the_session_and_the_other_device
test_connector_chap = connector.test_chap_right_and_wrong
test_multipath_path_loss_restore = multipath.test_multipath_connect_path_loss_restore_disconnect
