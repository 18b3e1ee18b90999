"""The VM agent's doorbell reader: which state a read says the port is in.

A pipe behaves as the virtio serial port does for a non-blocking reader: data when the
host rang, EAGAIN when it is connected and quiet, end of file when no host end is open.
"""

from __future__ import annotations

import os

from iscsikit._vm_agent import _Bell


def test_rings_are_drained_and_a_closed_host_end_reads_as_gone() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    bell = _Bell(read_end)
    try:
        assert bell.state() == _Bell.QUIET
        os.write(write_end, b"!!!")
        assert bell.state() == _Bell.RANG
        assert bell.state() == _Bell.QUIET  # the three rings were one wake-up
        os.write(write_end, b"!")
        os.close(write_end)
        write_end = -1
        assert bell.state() == _Bell.RANG  # the last ring still counts
        assert bell.state() == _Bell.GONE
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_no_such_port_means_no_bell() -> None:
    assert _Bell.find("iscsikit.no-such-port") is None
