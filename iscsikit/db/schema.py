"""open-iscsi 2.1.8's record keys: order, C types, defaults, enum choices, what may change.

Two readers live inside iscsiadm 2.1.8 and they disagree, so every key carries two types:

* ``idbm`` -- ``usr/idbm.c``: reads a record before ``-o update``/``-o delete``, and *writes*
  every record file (``idbm_print``). Unknown keys and bad enum values are ignored (the
  default stays), integers go through ``strtoul`` into the C field.
* ``lib`` -- ``libopeniscsiusr``: what ``iscsiadm -m node``, ``-o show`` and ``-m iface``
  use. An unknown key is fatal for the whole listing (exit 7), so is a bad enum or
  boolean (exit 1); integers are printed from their own, sometimes narrower, C fields.

The key *set* of a node or iface record depends on whether its iface looks IPv6. The
writer (``iface_get_iptype``) looks at ``iface.ipaddress`` (no dot, not dhcp) and falls
back to "ipv6" in the iface name; libopeniscsiusr and the ``usr/idbm.c`` readers only look
at the name ("default" for a node read by usr/idbm.c). A file whose two views differ is
one iscsiadm 2.1.8 writes and then cannot list (see :func:`iface_is_ipv6`).

Everything here is data plus small pure functions; :mod:`iscsikit.db.record` uses it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from iscsikit.runner import MASK as _MASK

#: What iscsiadm 2.1.8 writes on the first line of every record.
RECORD_VERSION: Final = "2.1.8"
BEGIN_RECORD: Final = f"# BEGIN RECORD {RECORD_VERSION}"
END_RECORD: Final = "# END RECORD"
#: How iscsiadm prints an empty string and a secret.
EMPTY: Final = "<empty>"
MASK: Final = _MASK
#: The C reader's limits (usr/idbm.h NAME_MAXVAL / VALUE_MAXVAL, fgets buffer of 2048).
MAX_KEY_BYTES: Final = 127
MAX_VALUE_BYTES: Final = 255
MAX_LINE_BYTES: Final = 2046  # without the newline
#: The bytes C's isspace() accepts in the "C" locale.
C_SPACE: Final = " \t\n\x0b\x0c\r"

# C string field sizes (usr/config.h, include/iscsi_proto.h): the value keeps size-1 bytes.
_NAME = 255  # TARGET_NAME_MAXLEN
_HOST = 1025  # NI_MAXHOST
_STR = 80  # ISCSI_MAX_STR_LEN
_AUTH = 256  # AUTH_STR_MAX_LEN
_IFACE = 65  # ISCSI_MAX_IFACE_LEN
_NETDEV = 16  # IFNAMSIZ
_HWADDR = 18  # ISCSI_HWADDRESS_BUF_SIZE
_TRANSPORT = 16  # ISCSI_TRANSPORT_NAME_MAXLEN
_INAME = 256  # TARGET_NAME_MAXLEN + 1

#: The CHAP algorithms 2.1.8 knows, in the order of its table.
CHAP_ALGS: Final = ("MD5", "SHA1", "SHA256", "SHA3-256")
CHAP_ALGS_MAX: Final = 5  # AUTH_CHAP_ALG_MAX_COUNT


class CType(enum.Enum):
    """How a value is parsed into its C field and printed back."""

    STR = "string"
    INT32 = "int32"
    INT64 = "int64"
    U8 = "uint8"
    U16 = "uint16"
    U32 = "uint32"
    ENUM = "enum"  # one of ``choices`` (TYPE_INT_O)
    BOOL = "bool"  # libopeniscsiusr's Yes/No
    LIST = "list"  # node.session.auth.chap_algs

    @property
    def is_int(self) -> bool:
        return self in _INT_BITS


#: (bits, signed) for the integer types.
_INT_BITS: Final[dict[CType, tuple[int, bool]]] = {
    CType.INT32: (32, True),
    CType.INT64: (64, True),
    CType.U8: (8, False),
    CType.U16: (16, False),
    CType.U32: (32, False),
}


class RecordKind(enum.Enum):
    """The four record files iscsiadm keeps."""

    NODE = "node"
    IFACE = "iface"
    SENDTARGETS = "sendtargets"
    ISNS = "isns"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One record key: its name, C types, default and rules.

    ``read_only``: iscsiadm refuses ``-o update`` of it ("used to look up the record").
    ``masked``: printed as ``********`` unless secrets are shown. ``hidden``: never printed
    (the password lengths, recomputed by iscsiadm). ``size``: the C buffer of a string.
    """

    name: str
    idbm: CType
    lib: CType
    default: str = ""
    choices: tuple[str, ...] = ()
    size: int = 0
    read_only: bool = False
    masked: bool = False
    hidden: bool = False

    @property
    def max_bytes(self) -> int:
        return self.size - 1 if self.size else MAX_VALUE_BYTES

    def describe(self) -> str:
        """A short human description of what values the key takes."""
        if self.idbm is CType.ENUM:
            return "one of " + ", ".join(self.choices)
        if self.idbm is CType.LIST:
            return "a comma-separated list of " + ", ".join(CHAP_ALGS)
        if self.idbm.is_int:
            lo, hi = int_range(self.idbm)
            return f"an integer from {lo} to {hi}"
        return f"a string of at most {self.max_bytes} bytes"


def _s(name: str, size: int, default: str = "", *, read_only: bool = False, masked: bool = False) -> KeySpec:
    return KeySpec(name, CType.STR, CType.STR, default, size=size, read_only=read_only, masked=masked)


def _i(
    name: str,
    default: int,
    lib: CType = CType.INT64,
    idbm: CType = CType.INT32,
    *,
    read_only: bool = False,
    hidden: bool = False,
) -> KeySpec:
    return KeySpec(name, idbm, lib, str(default), read_only=read_only, hidden=hidden)


def _u(name: str, ctype: CType, default: int = 0, lib: CType | None = None) -> KeySpec:
    return KeySpec(name, ctype, lib or ctype, str(default))


def _e(name: str, choices: Sequence[str], default: str, *, lib_bool: bool = False, read_only: bool = False) -> KeySpec:
    lib = CType.BOOL if lib_bool else CType.ENUM
    return KeySpec(name, CType.ENUM, lib, default, tuple(choices), read_only=read_only)


_NO_YES = ("No", "Yes")
_STARTUP = ("manual", "automatic", "onboot")
_DIGEST = ("None", "CRC32C", "CRC32C,None", "None,CRC32C")
_DISC_TYPES = ("send_targets", "isns", "offload_send_targets", "slp", "static", "fw")

# --------------------------------------------------------------------------------------
# iface keys (shared by iface records and the iface block of node records)

_IFACE_NAME = _s("iface.iscsi_ifacename", _IFACE, "default")
_IFACE_NETDEV = _s("iface.net_ifacename", _NETDEV)
_IFACE_IPADDR = _s("iface.ipaddress", _HOST)
_IFACE_PREFIX = _u("iface.prefix_len", CType.U8)
_IFACE_HWADDR = _s("iface.hwaddress", _HWADDR)
_IFACE_TRANSPORT = _s("iface.transport_name", _TRANSPORT, "tcp")
_IFACE_INAME = _s("iface.initiatorname", _INAME)
_IFACE_STATE = _s("iface.state", _STR)
_IFACE_VLAN_ID = _u("iface.vlan_id", CType.U16)
_IFACE_VLAN_PRIO = _u("iface.vlan_priority", CType.U8)
_IFACE_VLAN_STATE = _s("iface.vlan_state", _STR)
_IFACE_NUM = _u("iface.iface_num", CType.INT32, lib=CType.U32)
_IFACE_MTU = _u("iface.mtu", CType.U16)
_IFACE_PORT = _u("iface.port", CType.U16)
_IFACE_BOOTPROTO = _s("iface.bootproto", _STR)
_IFACE_SUBNET = _s("iface.subnet_mask", _HOST)
_IFACE_GATEWAY = _s("iface.gateway", _HOST)

# DHCP/IPv4 block, in usr/idbm.c order (bootproto, subnet and gateway are placed per record).
_IFACE_V4_DHCP: tuple[KeySpec, ...] = (
    _s("iface.dhcp_alt_client_id_state", _STR),
    _s("iface.dhcp_alt_client_id", _STR),
    _s("iface.dhcp_dns", _STR),
    _s("iface.dhcp_learn_iqn", _STR),
    _s("iface.dhcp_req_vendor_id_state", _STR),
    _s("iface.dhcp_vendor_id_state", _STR),
    _s("iface.dhcp_vendor_id", _STR),
    _s("iface.dhcp_slp_da", _STR),
    _s("iface.fragmentation", _STR),
    _s("iface.gratuitous_arp", _STR),
    _s("iface.incoming_forwarding", _STR),
    _s("iface.tos_state", _STR),
    _u("iface.tos", CType.U8),
    _u("iface.ttl", CType.U8),
)
_IFACE_V6: tuple[KeySpec, ...] = (
    _s("iface.ipv6_autocfg", _HOST),
    _s("iface.linklocal_autocfg", _HOST),
    _s("iface.router_autocfg", _HOST),
    _s("iface.ipv6_linklocal", _HOST),
    _s("iface.ipv6_router", _HOST),
    _u("iface.dup_addr_detect_cnt", CType.U8),
    _u("iface.flow_label", CType.U32),
    _s("iface.gratuitous_neighbor_adv", _STR),
    _u("iface.hop_limit", CType.U8),
    _s("iface.mld", _STR),
    _u("iface.nd_reachable_tmo", CType.U32),
    _u("iface.nd_rexmit_time", CType.U32),
    _u("iface.nd_stale_tmo", CType.U32),
    _u("iface.router_adv_link_mtu", CType.U32),
    _u("iface.traffic_class", CType.U8),
)
_IFACE_TAIL: tuple[KeySpec, ...] = (
    _s("iface.delayed_ack", _STR),
    _s("iface.tcp_nagle", _STR),
    _s("iface.tcp_wsf_state", _STR),
    _u("iface.tcp_wsf", CType.U8),
    _u("iface.tcp_timer_scale", CType.U8),
    _s("iface.tcp_timestamp", _STR),
    _s("iface.redirect", _STR),
    _u("iface.def_task_mgmt_timeout", CType.U16),
    _s("iface.header_digest", _STR),
    _s("iface.data_digest", _STR),
    _s("iface.immediate_data", _STR),
    _s("iface.initial_r2t", _STR),
    _s("iface.data_seq_inorder", _STR),
    _s("iface.data_pdu_inorder", _STR),
    _u("iface.erl", CType.U8),
    _u("iface.max_receive_data_len", CType.U32),
    _u("iface.first_burst_len", CType.U32),
    _u("iface.max_outstanding_r2t", CType.U16),
    _u("iface.max_burst_len", CType.U32),
    _s("iface.chap_auth", _STR),
    _s("iface.bidi_chap", _STR),
    _s("iface.strict_login_compliance", _STR),
    _s("iface.discovery_auth", _STR),
    _s("iface.discovery_logout", _STR),
)
# The order of idbm_recinfo_iface and of libopeniscsiusr's iface block.
_IFACE_HEAD: tuple[KeySpec, ...] = (
    _IFACE_NAME,
    _IFACE_NETDEV,
    _IFACE_IPADDR,
    _IFACE_PREFIX,
    _IFACE_HWADDR,
    _IFACE_TRANSPORT,
    _IFACE_INAME,
    _IFACE_STATE,
    _IFACE_VLAN_ID,
    _IFACE_VLAN_PRIO,
    _IFACE_VLAN_STATE,
    _IFACE_NUM,
    _IFACE_MTU,
    _IFACE_PORT,
)
_IFACE_V4_ISCSI_ORDER = (_IFACE_BOOTPROTO, _IFACE_SUBNET, _IFACE_GATEWAY, *_IFACE_V4_DHCP)

IFACE_KEYS_V4: Final = (*_IFACE_HEAD, *_IFACE_V4_ISCSI_ORDER, *_IFACE_TAIL)
IFACE_KEYS_V6: Final = (*_IFACE_HEAD, *_IFACE_V6, *_IFACE_TAIL)

# --------------------------------------------------------------------------------------
# node keys

_NODE_HEAD: tuple[KeySpec, ...] = (
    _s("node.name", _NAME, read_only=True),
    KeySpec("node.tpgt", CType.INT32, CType.INT32, "-1", read_only=True),
    _e("node.startup", _STARTUP, "manual"),
    _e("node.leading_login", _NO_YES, "No", lib_bool=True),
)
# usr/idbm.c writes the iface block of a node in its own order.
_NODE_IFACE_IDBM_HEAD: tuple[KeySpec, ...] = (
    _IFACE_HWADDR,
    _IFACE_IPADDR,
    _IFACE_NAME,
    _IFACE_NETDEV,
    _IFACE_GATEWAY,
    _IFACE_SUBNET,
    _IFACE_PREFIX,
    _IFACE_TRANSPORT,
    _IFACE_INAME,
    _IFACE_STATE,
    _IFACE_VLAN_ID,
    _IFACE_VLAN_PRIO,
    _IFACE_VLAN_STATE,
    _IFACE_NUM,
    _IFACE_MTU,
    _IFACE_PORT,
)
_NODE_IFACE_IDBM_V4 = (_IFACE_BOOTPROTO, *_IFACE_V4_DHCP)

_NODE_TAIL: tuple[KeySpec, ...] = (
    _s("node.discovery_address", _HOST, read_only=True),
    KeySpec("node.discovery_port", CType.INT32, CType.INT32, "0", read_only=True),
    _e("node.discovery_type", _DISC_TYPES, "static", read_only=True),
    _i("node.session.initial_cmdsn", 0, lib=CType.U32),
    _i("node.session.initial_login_retry_max", 4),
    _i("node.session.xmit_thread_priority", -20),
    _i("node.session.cmds_max", 128, lib=CType.U16),
    _i("node.session.queue_depth", 32, lib=CType.U16),
    _i("node.session.nr_sessions", 1),
    _e("node.session.auth.authmethod", ("None", "CHAP"), "None"),
    _s("node.session.auth.username", _AUTH),
    _s("node.session.auth.password", _AUTH, masked=True),
    _i("node.session.auth.password_length", 0, lib=CType.U32, hidden=True),
    _s("node.session.auth.username_in", _AUTH),
    _s("node.session.auth.password_in", _AUTH, masked=True),
    _i("node.session.auth.password_in_length", 0, lib=CType.U32, hidden=True),
    KeySpec("node.session.auth.chap_algs", CType.LIST, CType.LIST, "MD5"),
    _i("node.session.timeo.replacement_timeout", 120),
    _i("node.session.err_timeo.abort_timeout", 15),
    _i("node.session.err_timeo.lu_reset_timeout", 30),
    _i("node.session.err_timeo.tgt_reset_timeout", 30),
    _i("node.session.err_timeo.host_reset_timeout", 60),
    _e("node.session.iscsi.FastAbort", _NO_YES, "Yes", lib_bool=True),
    _e("node.session.iscsi.InitialR2T", _NO_YES, "No", lib_bool=True),
    _e("node.session.iscsi.ImmediateData", _NO_YES, "Yes", lib_bool=True),
    _i("node.session.iscsi.FirstBurstLength", 262144),
    _i("node.session.iscsi.MaxBurstLength", 16776192),
    _i("node.session.iscsi.DefaultTime2Retain", 0),
    _i("node.session.iscsi.DefaultTime2Wait", 2),
    _i("node.session.iscsi.MaxConnections", 1),
    _i("node.session.iscsi.MaxOutstandingR2T", 1),
    _i("node.session.iscsi.ERL", 0),
    _e("node.session.scan", ("manual", "auto"), "auto"),
    _i("node.session.reopen_max", 0),
    _s("node.conn[0].address", _HOST, read_only=True),
    KeySpec("node.conn[0].port", CType.INT32, CType.INT32, "3260", read_only=True),
    _e("node.conn[0].startup", _STARTUP, "manual"),
    _i("node.conn[0].tcp.window_size", 524288),
    _i("node.conn[0].tcp.type_of_service", 0),
    _i("node.conn[0].timeo.logout_timeout", 15),
    _i("node.conn[0].timeo.login_timeout", 30),
    _i("node.conn[0].timeo.auth_timeout", 45),
    _i("node.conn[0].timeo.noop_out_interval", 5),
    _i("node.conn[0].timeo.noop_out_timeout", 5),
    _i("node.conn[0].iscsi.MaxXmitDataSegmentLength", 0),
    _i("node.conn[0].iscsi.MaxRecvDataSegmentLength", 262144),
    _e("node.conn[0].iscsi.HeaderDigest", _DIGEST, "None"),
    _e("node.conn[0].iscsi.DataDigest", _DIGEST, "None"),
    _e("node.conn[0].iscsi.IFMarker", _NO_YES, "No", lib_bool=True),
    _e("node.conn[0].iscsi.OFMarker", _NO_YES, "No", lib_bool=True),
)

#: Node record keys in the order usr/idbm.c writes them (hidden keys included, not written).
NODE_FILE_KEYS_V4: Final = (*_NODE_HEAD, *_NODE_IFACE_IDBM_HEAD, *_NODE_IFACE_IDBM_V4, *_IFACE_TAIL, *_NODE_TAIL)
NODE_FILE_KEYS_V6: Final = (*_NODE_HEAD, *_NODE_IFACE_IDBM_HEAD, *_IFACE_V6, *_IFACE_TAIL, *_NODE_TAIL)
#: Node record keys in the order ``iscsiadm -m node -o show`` prints them.
NODE_SHOW_KEYS_V4: Final = (*_NODE_HEAD, *IFACE_KEYS_V4, *_NODE_TAIL)
NODE_SHOW_KEYS_V6: Final = (*_NODE_HEAD, *IFACE_KEYS_V6, *_NODE_TAIL)

# --------------------------------------------------------------------------------------
# discovery keys

_DISC_STARTUP = _e("discovery.startup", ("manual", "automatic"), "manual")
_DISC_TYPE = _e(
    "discovery.type",
    ("sendtargets", "isns", "offload_send_targets", "slp", "static", "fw"),
    "sendtargets",
    read_only=True,
)
_DISC_ADDR = _s("discovery.sendtargets.address", _HOST, read_only=True)

SENDTARGETS_KEYS: Final = (
    _DISC_STARTUP,
    _DISC_TYPE,
    _DISC_ADDR,
    _i("discovery.sendtargets.port", 0, lib=CType.INT32, read_only=True),
    _e("discovery.sendtargets.auth.authmethod", ("None", "CHAP"), "None"),
    _s("discovery.sendtargets.auth.username", _AUTH),
    _s("discovery.sendtargets.auth.password", _AUTH, masked=True),
    _i("discovery.sendtargets.auth.password_length", 0, lib=CType.INT32, hidden=True),
    _s("discovery.sendtargets.auth.username_in", _AUTH),
    _s("discovery.sendtargets.auth.password_in", _AUTH, masked=True),
    _i("discovery.sendtargets.auth.password_in_length", 0, lib=CType.INT32, hidden=True),
    KeySpec("node.session.auth.chap_algs", CType.LIST, CType.LIST, "MD5"),
    _i("discovery.sendtargets.timeo.login_timeout", 15, lib=CType.INT32),
    _e("discovery.sendtargets.use_discoveryd", _NO_YES, "No"),
    _i("discovery.sendtargets.discoveryd_poll_inval", 30, lib=CType.INT32),
    _i("discovery.sendtargets.reopen_max", 5, lib=CType.INT32),
    _i("discovery.sendtargets.timeo.auth_timeout", 45, lib=CType.INT32),
    _i("discovery.sendtargets.timeo.active_timeout", 30, lib=CType.INT32),
    _i("discovery.sendtargets.iscsi.MaxRecvDataSegmentLength", 32768, lib=CType.INT32),
)
ISNS_KEYS: Final = (
    _DISC_STARTUP,
    KeySpec(_DISC_TYPE.name, CType.ENUM, CType.ENUM, "isns", _DISC_TYPE.choices, read_only=True),
    _DISC_ADDR,
    _i("discovery.sendtargets.port", 0, lib=CType.INT32, read_only=True),
    _e("discovery.isns.use_discoveryd", _NO_YES, "No"),
    _i("discovery.isns.discoveryd_poll_inval", -1, lib=CType.INT32),
)

#: ISCSI_LISTEN_PORT and ISNS_DEFAULT_PORT.
DEFAULT_ST_PORT: Final = 3260
DEFAULT_ISNS_PORT: Final = 3205

# --------------------------------------------------------------------------------------
# Lookups


@dataclass(frozen=True, slots=True)
class KeySet:
    """An ordered set of keys with name lookup."""

    keys: tuple[KeySpec, ...]
    by_name: Mapping[str, KeySpec] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {k.name: k for k in self.keys})

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.keys)

    def get(self, name: str) -> KeySpec | None:
        return self.by_name.get(name)

    def defaults(self) -> dict[str, str]:
        return {k.name: k.default for k in self.keys}


NODE_FILE_V4: Final = KeySet(NODE_FILE_KEYS_V4)
NODE_FILE_V6: Final = KeySet(NODE_FILE_KEYS_V6)
NODE_SHOW_V4: Final = KeySet(NODE_SHOW_KEYS_V4)
NODE_SHOW_V6: Final = KeySet(NODE_SHOW_KEYS_V6)
IFACE_V4: Final = KeySet(IFACE_KEYS_V4)
IFACE_V6: Final = KeySet(IFACE_KEYS_V6)
SENDTARGETS: Final = KeySet(SENDTARGETS_KEYS)
ISNS: Final = KeySet(ISNS_KEYS)

#: Every node key (both iface variants), with the compiled defaults of idbm_node_setup_defaults.
NODE_ALL: Final = KeySet(tuple({k.name: k for k in (*NODE_FILE_KEYS_V4, *NODE_FILE_KEYS_V6)}.values()))
IFACE_ALL: Final = KeySet(tuple({k.name: k for k in (*IFACE_KEYS_V4, *IFACE_KEYS_V6)}.values()))


def file_keys(kind: RecordKind, ipv6: bool) -> KeySet:
    """The keys usr/idbm.c writes for a record, in file order."""
    if kind is RecordKind.NODE:
        return NODE_FILE_V6 if ipv6 else NODE_FILE_V4
    if kind is RecordKind.IFACE:
        return IFACE_V6 if ipv6 else IFACE_V4
    return SENDTARGETS if kind is RecordKind.SENDTARGETS else ISNS


def show_keys(kind: RecordKind, ipv6: bool) -> KeySet:
    """The keys ``iscsiadm ... -o show`` prints (and libopeniscsiusr accepts), in order."""
    if kind is RecordKind.NODE:
        return NODE_SHOW_V6 if ipv6 else NODE_SHOW_V4
    return file_keys(kind, ipv6)


def all_keys(kind: RecordKind) -> KeySet:
    """Every key a record of this kind can hold, whatever its iface variant."""
    if kind is RecordKind.NODE:
        return NODE_ALL
    if kind is RecordKind.IFACE:
        return IFACE_ALL
    return SENDTARGETS if kind is RecordKind.SENDTARGETS else ISNS


def name_is_ipv6(name: str) -> bool:
    """libopeniscsiusr's test: an iface whose *name* contains "ipv6" has the IPv6 key set."""
    return "ipv6" in name


def iface_is_ipv6(ipaddress: str, bootproto: str, name: str) -> bool:
    """usr/iface.c ``iface_get_iptype``: the key set usr/idbm.c *writes*.

    >>> iface_is_ipv6("2001:db8::1", "", "eth0-offload")
    True
    >>> iface_is_ipv6("", "", "default")
    False
    """
    if not ipaddress or ipaddress == EMPTY:
        return name_is_ipv6(name)
    return bootproto != "dhcp" and "." not in ipaddress


# --------------------------------------------------------------------------------------
# C value semantics


def int_range(ctype: CType) -> tuple[int, int]:
    bits, signed = _INT_BITS[ctype]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def c_strtoul(text: str) -> int:
    """glibc ``strtoul(text, NULL, 10)`` on a 64-bit machine, as an unsigned 64-bit value."""
    i, n = 0, len(text)
    while i < n and text[i] in C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    start = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    if i == start:
        return 0
    value = int(text[start:i])
    if value > 0xFFFFFFFFFFFFFFFF:
        return 0xFFFFFFFFFFFFFFFF
    return (-value) & 0xFFFFFFFFFFFFFFFF if negative else value


def c_int(ctype: CType, text: str) -> int:
    """The value of ``text`` once ``strtoul`` has stored it into a C field of ``ctype``."""
    bits, signed = _INT_BITS[ctype]
    value = c_strtoul(text) & ((1 << bits) - 1)
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


# A surrogate that surrogateescape does not own (U+DC80..U+DCFF stand for undecodable bytes)
_LONE_SURROGATE: Final = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def _as_escaped_bytes(m: re.Match[str]) -> str:
    return m.group().encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")


def c_bytes(text: str) -> bytes:
    """The bytes a C program sees for ``text``: UTF-8, with surrogateescape'd bytes as themselves.

    Text read from a file never holds another surrogate, but a ``str`` handed to the parser can
    (a JSON ``"\\ud800"``): such a lone surrogate counts as the three bytes ``surrogatepass``
    gives it, instead of raising ``UnicodeEncodeError``.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub(_as_escaped_bytes, text).encode("utf-8", "surrogateescape")


def has_lone_surrogate(text: str) -> bool:
    """True if ``text`` holds a surrogate that stands for no byte (it cannot be written as is)."""
    return _LONE_SURROGATE.search(text) is not None


def c_truncate(value: str, size: int) -> str:
    """``strlcpy(dst, value, size)``: keep at most size-1 bytes."""
    raw = c_bytes(value)
    if len(raw) < size:
        return value
    return raw[: size - 1].decode("utf-8", "surrogateescape")


def chap_algs_normalize(text: str) -> tuple[str, list[str]]:
    """Parse a chap_algs list as iscsiadm does; return (canonical value, warnings).

    Tokens are separated by commas, spaces or newlines; unknown and repeated names are
    dropped with a warning, as iscsiadm's own parser does.
    """
    out: list[str] = []
    warnings: list[str] = []
    for token in text.replace(" ", ",").replace("\n", ",").split(","):
        if not token:
            continue
        if len(out) >= CHAP_ALGS_MAX:
            warnings.append(f"too many values, {token!r} and later ones ignored")
            break
        if token not in CHAP_ALGS:
            warnings.append(f"unknown CHAP algorithm {token!r} ignored")
        elif token in out:
            warnings.append(f"repeated CHAP algorithm {token!r} ignored")
        else:
            out.append(token)
    return ",".join(out), warnings
