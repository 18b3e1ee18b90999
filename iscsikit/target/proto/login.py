"""The target side of the login phase for one connection (RFC 7143 6.3 and 11.12/11.13).

:class:`LoginMachine` takes Login Requests and returns Login Responses. It checks the leading
declarations (InitiatorName, SessionType, TargetName), the ACL, authentication (None or
one-way/mutual CHAP: the initiator's own ACL credentials if it has them, else the target's),
negotiates operational keys through :class:`.keys.Negotiator`, follows the stage transitions
of :data:`.state.LOGIN_STAGE_TRANSITIONS`, and on the final response checks the ACL again (it
may have changed meanwhile), allocates the TSIH and creates the :class:`.session.Session`.

A failed login raises :class:`RemoteProtocolError` with ``login_status`` (class << 8 | detail)
and ``close=True``; the connection answers with that status and closes.
"""

from __future__ import annotations

from dataclasses import dataclass

from iscsikit.target.proto.chap import ChapError, ChapExchange
from iscsikit.target.proto.errors import RemoteProtocolError
from iscsikit.target.proto.keys import Negotiator
from iscsikit.target.proto.pdu import LoginRequest, LoginResponse
from iscsikit.target.proto.serial import sn_add
from iscsikit.target.proto.session import (
    AuthConfig,
    PortalInfo,
    Session,
    SessionTable,
    TargetDirectory,
    TargetInfo,
)
from iscsikit.target.proto.state import LOGIN_STAGE_TRANSITIONS, Stage
from iscsikit.target.proto.text import decode_text, encode_text

__all__ = ["LoginMachine", "LoginResult", "LoginStatus"]


class LoginStatus:
    """Login status codes (class << 8 | detail), RFC 7143 11.13.5."""

    SUCCESS = 0x0000
    INITIATOR_ERROR = 0x0200
    AUTH_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302


def _fail(status: int, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"login failed: {message}", login_status=status, close=True)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A completed login: the session, and the session it replaced (reinstatement) if any."""

    session: Session
    replaced: Session | None
    reused: bool = False


_SECURITY_KEYS = frozenset({"AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})
_LEADING_KEYS = frozenset({"InitiatorName", "TargetName", "SessionType", "InitiatorAlias"})


class LoginMachine:
    """Login for one connection. Feed :meth:`receive` each Login Request."""

    def __init__(self, directory: TargetDirectory, sessions: SessionTable, portal: PortalInfo) -> None:
        self.directory = directory
        self.sessions = sessions
        self.portal = portal
        self.stage: Stage | None = None
        self.first: LoginRequest | None = None
        self.initiator_name = ""
        self.initiator_alias = ""
        self.target: TargetInfo | None = None
        self.discovery = False
        self.negotiator: Negotiator | None = None
        self.auth: AuthConfig = AuthConfig()
        self.auth_method: str | None = None
        self.chap: ChapExchange | None = None
        self.authenticated = False
        self.stat_sn = 0
        self.exp_cmd_sn = 0
        self._partial = b""
        self._declared = False
        self.result: LoginResult | None = None

    # -- public ------------------------------------------------------------------------------

    def receive(self, req: LoginRequest) -> LoginResponse:
        """The response to one Login Request; sets :attr:`result` when login completes."""
        if self.first is None:
            self._start(req)
        else:
            self._check_same_login(req)
        if req.cont:
            # The initiator splits its keys over several PDUs: acknowledge with an empty response.
            self._partial += bytes(req.data)
            if len(self._partial) > 65536:
                raise _fail(LoginStatus.INITIATOR_ERROR, "login text longer than 64 KiB")
            return self._response(req, transit=False, nsg=req.nsg, keys=[])
        text = self._partial + bytes(req.data)
        self._partial = b""
        pairs = decode_text(text)
        csg = self._check_stage(req)
        answers: list[tuple[str, str]] = []
        if self.stage is None:
            answers += self._leading(pairs)
            self.stage = Stage(csg)
        answers += self._security(pairs, csg) if csg == Stage.SECURITY else []
        answers += self._operational(pairs, csg)
        transit = False
        nsg = req.nsg
        if req.transit:
            if (Stage(csg), Stage(req.nsg) if req.nsg in (0, 1, 3) else None) not in LOGIN_STAGE_TRANSITIONS:
                raise _fail(LoginStatus.INITIATOR_ERROR, f"illegal stage transition {csg} -> {req.nsg}")
            transit = self._may_leave(csg)
        # Our declarations go in an operational-stage response only: open-iscsi drops a login
        # whose security-stage response carries operational keys.
        if csg == Stage.OPERATIONAL and not self._declared:
            assert self.negotiator is not None
            answers += self.negotiator.declarations()
            self._declared = True
        if transit:
            self.stage = Stage(nsg)
        resp = self._response(req, transit=transit, nsg=nsg if transit else csg, keys=answers)
        if transit and nsg == Stage.FULL_FEATURE:
            return self._finish(req, resp)
        return resp

    def failure_response(self, req: LoginRequest | None, status: int) -> LoginResponse:
        """The Login Response that reports ``status`` and ends the login."""
        isid = req.isid if req is not None else b"\0" * 6
        itt = req.itt if req is not None else 0
        csg = req.csg if req is not None else 0
        resp = LoginResponse(
            isid=isid, itt=itt, csg=csg, nsg=0, tsih=0, stat_sn=self.stat_sn, exp_cmd_sn=self.exp_cmd_sn,
            max_cmd_sn=self.exp_cmd_sn, status=status,
        )  # fmt: skip
        self.stat_sn = sn_add(self.stat_sn, 1)
        return resp

    # -- steps -------------------------------------------------------------------------------

    def _start(self, req: LoginRequest) -> None:
        self.first = req
        self.stat_sn = req.exp_stat_sn
        self.exp_cmd_sn = req.cmd_sn
        if req.version_min > 0:
            raise _fail(LoginStatus.UNSUPPORTED_VERSION, f"version {req.version_min}..{req.version_max} unsupported")

    def _check_same_login(self, req: LoginRequest) -> None:
        assert self.first is not None
        if req.isid != self.first.isid or req.tsih != self.first.tsih or req.cid != self.first.cid:
            raise _fail(LoginStatus.INITIATOR_ERROR, "ISID, TSIH or CID changed during login")

    def _check_stage(self, req: LoginRequest) -> int:
        csg = req.csg
        if csg not in (Stage.SECURITY, Stage.OPERATIONAL):
            raise _fail(LoginStatus.INITIATOR_ERROR, f"CSG {csg} is not a login stage")
        if self.stage is not None and csg != self.stage:
            raise _fail(LoginStatus.INITIATOR_ERROR, f"CSG {csg} but the login is in stage {int(self.stage)}")
        return csg

    def _leading(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        keys = dict(pairs)
        name = keys.get("InitiatorName")
        if not name:
            raise _fail(LoginStatus.MISSING_PARAMETER, "InitiatorName is missing")
        self.initiator_name = name
        self.initiator_alias = keys.get("InitiatorAlias", "")
        session_type = keys.get("SessionType", "Normal")
        if session_type not in ("Normal", "Discovery"):
            raise _fail(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType {session_type!r}")
        self.discovery = session_type == "Discovery"
        if self.discovery:
            self.auth = self.directory.discovery_auth
        else:
            target_name = keys.get("TargetName")
            if not target_name:
                raise _fail(LoginStatus.MISSING_PARAMETER, "TargetName is missing in a Normal session")
            target = self.directory.targets.get(target_name)
            if target is None:
                raise _fail(LoginStatus.NOT_FOUND, f"no target {target_name!r}")
            if not target.allows(name):
                raise _fail(LoginStatus.AUTHORIZATION_FAILURE, f"initiator {name!r} is not in {target_name}'s ACL")
            self.target = target
            self.auth = target.auth_for(name)
        self.negotiator = Negotiator(self.directory.limits, discovery=self.discovery)
        answers = [("TargetPortalGroupTag", str(self.portal.tpgt))]
        if self.target is not None and self.target.alias:
            answers.append(("TargetAlias", self.target.alias))
        return answers

    def _security(self, pairs: list[tuple[str, str]], csg: int) -> list[tuple[str, str]]:
        keys = {k: v for k, v in pairs if k in _SECURITY_KEYS}
        out: list[tuple[str, str]] = []
        if "AuthMethod" in keys:
            if self.auth_method is not None:
                raise _fail(LoginStatus.INITIATOR_ERROR, "AuthMethod offered twice")
            offered = [m.strip() for m in keys["AuthMethod"].split(",")]
            want = "CHAP" if self.auth.chap is not None else "None"
            if want not in offered:
                raise _fail(LoginStatus.AUTH_FAILURE, f"target requires AuthMethod={want}, initiator offered {offered}")
            self.auth_method = want
            out.append(("AuthMethod", want))
            if want == "None":
                self.authenticated = True
            else:
                assert self.auth.chap is not None
                self.chap = ChapExchange(
                    self.auth.chap, self.auth.mutual, self.sessions.challenges, algorithms=self.auth.algorithms
                )
        try:
            if "CHAP_A" in keys:
                if self.chap is None or self.chap.algorithm:
                    raise _fail(LoginStatus.INITIATOR_ERROR, "CHAP_A without AuthMethod=CHAP, or twice")
                out += self.chap.choose(keys["CHAP_A"])
            elif "CHAP_R" in keys or "CHAP_N" in keys:
                if self.chap is None:
                    raise _fail(LoginStatus.INITIATOR_ERROR, "CHAP_R without AuthMethod=CHAP")
                out += self.chap.verify(keys)  # refuses a second response to the same challenge
                self.authenticated = True
        except ChapError as e:
            raise _fail(LoginStatus.AUTH_FAILURE, str(e)) from None
        return out

    def _operational(self, pairs: list[tuple[str, str]], csg: int) -> list[tuple[str, str]]:
        assert self.negotiator is not None
        rest = [(k, v) for k, v in pairs if k not in _SECURITY_KEYS and k not in _LEADING_KEYS]
        if csg == Stage.SECURITY:
            # Operational keys belong in stage 1; a few initiators send them early. Answer them.
            rest = [(k, v) for k, v in rest if k != "TargetPortalGroupTag"]
        return self.negotiator.negotiate(rest)

    def _may_leave(self, csg: int) -> bool:
        if csg == Stage.SECURITY:
            if self.authenticated:
                return True
            if self.auth_method is None:
                # Skipping authentication: only if the target requires none.
                if self.auth.chap is not None:
                    raise _fail(LoginStatus.AUTH_FAILURE, "target requires CHAP; initiator did not negotiate it")
                self.authenticated = True
                return True
            return False  # CHAP still in progress: stay in the security stage
        if self.auth.chap is not None and not self.authenticated:
            raise _fail(LoginStatus.AUTH_FAILURE, "target requires CHAP; login skipped the security stage")
        return True

    def _recheck_acl(self) -> None:
        """The ACL may have changed while this login ran (``target acl remove``): ask again."""
        if self.target is None:
            return
        current = self.directory.targets.get(self.target.name)
        if current is None:
            raise _fail(LoginStatus.TARGET_REMOVED, f"target {self.target.name} was removed during login")
        if not current.allows(self.initiator_name) or current.auth_for(self.initiator_name) != self.auth:
            raise _fail(
                LoginStatus.AUTHORIZATION_FAILURE,
                f"the ACL of {self.target.name} for {self.initiator_name!r} changed during login",
            )

    def _response(self, req: LoginRequest, *, transit: bool, nsg: int, keys: list[tuple[str, str]]) -> LoginResponse:
        resp = LoginResponse(
            isid=req.isid, itt=req.itt, csg=req.csg, nsg=nsg if transit else 0, transit=transit,
            tsih=req.tsih, stat_sn=self.stat_sn, exp_cmd_sn=self.exp_cmd_sn,
            max_cmd_sn=sn_add(self.exp_cmd_sn, self.directory.limits.queue_depth - 1),
            status=LoginStatus.SUCCESS, data=encode_text(keys),
        )  # fmt: skip
        self.stat_sn = sn_add(self.stat_sn, 1)
        return resp

    def _finish(self, req: LoginRequest, resp: LoginResponse) -> LoginResponse:
        assert self.negotiator is not None
        if self.auth.chap is not None and not self.authenticated:
            raise _fail(LoginStatus.AUTH_FAILURE, "login reached full feature phase without CHAP")
        self._recheck_acl()
        params = self.negotiator.params
        limits = self.directory.limits
        for name, wanted, got in (("header", limits.header_digests, params.header_digest),
                                  ("data", limits.data_digests, params.data_digest)):  # fmt: skip
            if "None" not in wanted and not got and not self.discovery:
                raise _fail(LoginStatus.INITIATOR_ERROR, f"the target requires a CRC32C {name} digest")
        params.max_recv_data_segment_length = limits.max_recv_data_segment_length
        target_name = self.target.name if self.target is not None else ""
        if req.tsih:
            existing = self.sessions.by_tsih.get(req.tsih)
            if (
                existing is None
                or existing.isid != req.isid
                or existing.initiator_name != self.initiator_name
                or existing.target_name != target_name
            ):
                raise _fail(LoginStatus.SESSION_DOES_NOT_EXIST, f"no session with TSIH {req.tsih}")
            # Connection reinstatement (MaxConnections=1): the new connection takes the session over.
            existing.params = params
            existing.exp_cmd_sn = req.cmd_sn
            existing.active = 0
            self.result = LoginResult(existing, existing, reused=True)
            session = existing
        else:
            session, old = self.sessions.create(
                isid=bytes(req.isid),
                initiator_name=self.initiator_name,
                target_name=target_name,
                discovery=self.discovery,
                params=params,
                exp_cmd_sn=req.cmd_sn,
                queue_depth=self.directory.limits.queue_depth,
            )
            session.initiator_alias = self.initiator_alias
            session.chap_user = self.auth.chap.user if self.auth.chap is not None else ""
            self.result = LoginResult(session, old)
        return LoginResponse(
            isid=resp.isid, itt=resp.itt, csg=resp.csg, nsg=resp.nsg, transit=True, tsih=session.tsih,
            stat_sn=resp.stat_sn, exp_cmd_sn=resp.exp_cmd_sn, max_cmd_sn=session.max_cmd_sn,
            status=LoginStatus.SUCCESS, data=resp.data,
        )  # fmt: skip
