"""iSNS discovery against Debian's open-isns server (isnsd) in the VM.

tgtd 1.0.85's own iSNS client registers its target nodes but no portal objects (seen here:
``isnsadm --list portals`` stays empty), so the target's portal is registered with
``isnsadm`` as an administrator would; the target behind it is a real tgtd that is then
logged into.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

ISNSD = """
set -e
mkdir -p /run/iscsikit-test/isns-db
cat > /run/iscsikit-test/isnsd.conf <<EOF
Database = /run/iscsikit-test/isns-db
PIDFile = /run/iscsikit-test/isnsd.pid
Security = 0
SLPRegister = 0
DefaultDiscoveryDomain = 1
EOF
echo 'Security = 0' > /run/iscsikit-test/isnsadm.conf
pkill -x isnsd || true
rm -rf /run/iscsikit-test/isns-db/*
setsid isnsd -c /run/iscsikit-test/isnsd.conf -f > "$ISCSIKIT_VM_SHARED/isnsd.log" 2>&1 < /dev/null &
for i in $(seq 200); do ss -Hltn 'sport = :3205' | grep -q 3205 && break; sleep 0.05; done
"""


@pytest.fixture
def isns(guest: Any) -> Any:
    guest.sh(ISNSD)
    yield guest
    guest.sh("pkill -x isnsd || true")


def test_isns_discovery_then_login(isns, guest):
    t = guest.target(iqn=f"iqn.2026-11.io.iscsikit.test:isns{uuid.uuid4().hex[:6]}")
    guest.sh(
        f"isnsadm -c /run/iscsikit-test/isnsadm.conf --local --register "
        f"entity=tgtd-in-vm portal={t.portal} target={t.iqn}"
    )
    found = json.loads(guest.sh("iscsikit --json discover --type isns 127.0.0.1").stdout)
    assert {"target": t.iqn, "address": "127.0.0.1", "port": 3260, "tpgt": 1} in [
        {k: f[k] for k in ("target", "address", "port", "tpgt")} for f in found
    ]
    res = json.loads(guest.sh(f"iscsikit --json login {t.iqn} --portal {t.portal} --lun 1").stdout)
    assert res["devices"][0]["device"].startswith("/dev/sd")
    json.loads(guest.sh(f"iscsikit --json logout {t.iqn}").stdout)


def test_isns_with_nothing_registered_finds_nothing(isns, guest):
    r = guest.sh("iscsikit --json discover --type isns 127.0.0.1:3205 --no-persist")
    assert json.loads(r.stdout) == []
