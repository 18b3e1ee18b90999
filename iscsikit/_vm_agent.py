"""The guest half of :mod:`iscsikit.vm`: runs as the ``vng --exec`` command inside the VM.

It is started once per boot as ``python _vm_agent.py AGENT_DIR`` and lives until the host
asks it to stop (or the VM is killed). It only uses the standard library, because it runs
with whatever Python the host has, seen read-only through virtme-ng's 9p root.

Two phases:

1. **Prepare the guest, once.** Load ``iscsi_tcp``, ``sd_mod`` and (when present)
   ``dm_multipath``; make ``/run/lock/iscsi``; give open-iscsi an empty database and an
   initiator name; make sure udev runs and has settled; start ``iscsid -f`` for the whole
   session. What happened is written to ``AGENT_DIR/ready.json`` (the host waits for it).
2. **Serve requests.** ``AGENT_DIR`` is a directory shared with the host (virtme-ng
   ``--rwdir``, same path on both sides). The host drops ``req/<id>.json`` there (written
   to a temp name, then renamed, so it is never seen half-written); the agent runs it with
   bash, in its own session, stdout and stderr going to files on the guest's tmpfs (not
   pipes: a script that starts a daemon with ``&`` must not keep the request open), and
   answers with ``res/<id>.json``, again temp + rename. ``req/<id>.cancel`` kills a
   running request's process group; ``req/stop`` ends the agent, which powers the VM off.

Why a shared directory plus a doorbell: 9p does not deliver inotify events for host-side
changes, and the virtio ports virtme-ng sets up are taken by its own stdio. So the host
adds one more virtio serial port, named ``iscsikit.bell`` (:data:`BELL_PORT`), and writes a
byte to it after each file it drops into ``req/``; the agent sleeps in ``select`` on that
port and on its children's pidfds, and lists ``req/`` when woken (and once a second, as a
safety net). Polling instead cost a quarter of a host core per idle VM under TCG: every
wakeup is a Python loop and a 9p round trip, emulated. Without the port (an older host
side) or while the host has not connected to it, the agent falls back to polling: every
2 ms while requests come in, backing off to 50 ms when idle.

The request/response format is private to this module and :mod:`iscsikit.vm`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

IDLE_MIN = 0.002  # poll interval right after activity (seconds)
IDLE_MAX = 0.05  # poll interval after a quiet spell
LOCAL_DIR = Path("/run/iscsikit-agent")  # guest tmpfs: stdout/stderr files and scripts
MODULES_REQUIRED = ("iscsi_tcp", "sd_mod")
MODULES_OPTIONAL = ("dm_multipath",)
DB_DIRS = ("/etc/iscsi", "/var/lib/iscsi")
DB_SUBDIRS = ("nodes", "send_targets", "isns", "static", "fw", "slp")
ISCSID_SOCKET = "@ISCSIADM_ABSTRACT_NAMESPACE"
BELL_PORT = "iscsikit.bell"  # the virtio serial port the host rings (see iscsikit.vm)
BELL_WAIT = 1.0  # with the doorbell: list req/ at least this often anyway (seconds)


def _now() -> float:
    return time.monotonic()


class Agent:
    def __init__(self, agent_dir: Path) -> None:
        self.dir = agent_dir
        self.req = agent_dir / "req"
        self.res = agent_dir / "res"
        self.config: dict[str, Any] = json.loads((agent_dir / "config.json").read_text())
        self.shared = Path(self.config["shared"])
        self._log = open(agent_dir / "agent.log", "a", buffering=1)  # noqa: SIM115 - lives as long as we do
        self.running: dict[str, _Job] = {}
        self.warnings: list[str] = []
        self.base_env = self._base_env()
        self.bell = _Bell.find(BELL_PORT)

    # ---- logging and helpers ------------------------------------------------------------

    def log(self, msg: str) -> None:
        self._log.write(f"[{_uptime():9.3f}] {msg}\n")

    def sh(self, argv: list[str], timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        started = _now()
        try:
            cp = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.base_env,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log(f"prep: {' '.join(argv)} failed: {exc}")
            if check:
                self.warnings.append(f"{' '.join(argv)}: {exc}")
            return subprocess.CompletedProcess(argv, 127, "", str(exc))
        self.log(
            f"prep: {' '.join(argv)} -> {cp.returncode} in {_now() - started:.3f}s"
            + (f": {cp.stderr.strip()[-500:]}" if cp.returncode and cp.stderr.strip() else "")
        )
        if check and cp.returncode != 0:
            self.warnings.append(f"{' '.join(argv)} exited {cp.returncode}: {cp.stderr.strip()[-300:]}")
        return cp

    def _base_env(self) -> dict[str, str]:
        path = ":".join([self.config["venv_bin"], "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
        env = {
            "PATH": path,
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "SHELL": "/bin/bash",
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",  # the host tree is read-only in the guest
            "PYTHONUNBUFFERED": "1",
            "ISCSIKIT_VM": "1",
            "ISCSIKIT_VM_SHARED": str(self.shared),
        }
        if self.config.get("venv"):
            env["VIRTUAL_ENV"] = self.config["venv"]
        return env

    # ---- phase 1: prepare the guest -------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        started = _now()
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        if self.config.get("cached"):
            self._cached_view(self.config["cached"])
        # One modprobe for all (each process start costs a lot under TCG); -a goes on past a
        # module that fails, and /sys/module says what actually loaded.
        self.sh(["modprobe", "-a", *MODULES_REQUIRED, *MODULES_OPTIONAL])
        modules = {mod: Path("/sys/module", mod).is_dir() for mod in (*MODULES_REQUIRED, *MODULES_OPTIONAL)}
        for mod in MODULES_REQUIRED:
            if not modules[mod]:
                self.warnings.append(f"module {mod} did not load (see agent.log)")
        Path("/run/lock/iscsi").mkdir(parents=True, exist_ok=True)
        self._fresh_database()
        initiator = self._initiator_name()
        self._udev()
        iscsid_pid = self._start_iscsid()
        uname = os.uname()
        info: dict[str, Any] = {
            "kernel": uname.release,
            "uptime": _uptime(),
            "prepare_seconds": round(_now() - started, 3),
            "modules": modules,
            "initiator_name": initiator,
            "iscsid_pid": iscsid_pid,
            "agent_pid": os.getpid(),
            "doorbell": self.bell is not None,
            "warnings": self.warnings,
        }
        self.log(f"ready: {json.dumps(info)}")
        return info

    def _cached_view(self, view: dict[str, Any]) -> None:
        """Serve read-mostly trees from the host's second 9p export, mounted with caching.

        virtme-ng's root is 9p without caching: every stat and open is a round trip to the
        host, which under TCG makes each Python start cost seconds. The trees named here do
        not change while the VM runs, so caching them is safe; ``overlays`` stay writable
        (a tmpfs upper layer, as virtme-ng does), ``binds`` are read-only. ``files`` maps a
        file to the text it shows instead (the editable install's ``.pth``).
        """
        root = Path("/run/iscsikit-ro")
        root.mkdir(parents=True, exist_ok=True)
        options = "ro,trans=virtio,version=9p2000.L,access=any,msize=512000,cache=loose"
        if self.sh(["mount", "-t", "9p", "-o", options, view["tag"], str(root)], check=True).returncode:
            return
        for index, path in enumerate(view.get("overlays", [])):
            upper = LOCAL_DIR / f"overlay{index}"
            (upper / "upper").mkdir(parents=True, exist_ok=True)
            (upper / "work").mkdir(parents=True, exist_ok=True)
            layers = f"lowerdir={root}{path},upperdir={upper}/upper,workdir={upper}/work"
            self.sh(["mount", "-t", "overlay", "-o", layers, f"iscsikit-ro{index}", path], check=True)
        for path in view.get("binds", []):
            self.sh(["mount", "--bind", f"{root}{path}", path], check=True)
        for index, (path, text) in enumerate(view.get("files", {}).items()):
            replacement = LOCAL_DIR / f"file{index}"
            replacement.write_text(text)
            self.sh(["mount", "--bind", str(replacement), path], check=True)

    def _fresh_database(self) -> None:
        """Empty open-iscsi DB: the guest's /etc and /var are throwaway overlays of the host's."""
        for base in DB_DIRS:
            for sub in DB_SUBDIRS:
                path = Path(base) / sub
                if path.exists():
                    self.sh(["rm", "-rf", str(path)])

    def _initiator_name(self) -> str:
        path = Path("/etc/iscsi/initiatorname.iscsi")
        try:
            for line in path.read_text().splitlines():
                if line.startswith("InitiatorName=") and len(line) > len("InitiatorName="):
                    return line.split("=", 1)[1].strip()
        except OSError:
            pass
        cp = self.sh(["iscsi-iname"])
        name = cp.stdout.strip() if cp.returncode == 0 and cp.stdout.strip() else "iqn.2026-11.io.iscsikit:vm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"InitiatorName={name}\n")
        self.log(f"prep: wrote a fresh {path}: {name}")
        return name

    def _udev(self) -> None:
        if not pids("systemd-udevd") and not pids("udevd"):
            for daemon in ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd", "/sbin/udevd"):
                if os.path.exists(daemon):
                    self.sh([daemon, "--daemon"], check=True)
                    self.sh(["udevadm", "trigger", "--action=add"])
                    break
            else:
                self.warnings.append("no udev daemon found: /dev/disk/by-path links will not appear")
        self.sh(["udevadm", "settle", "--timeout=60"], timeout=70, check=True)

    def _start_iscsid(self) -> int | None:
        log = open(self.shared / "iscsid.log", "ab")  # noqa: SIM115 - handed to the daemon
        try:
            proc = subprocess.Popen(
                ["iscsid", "-f"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.base_env,
            )
        except OSError as exc:
            self.warnings.append(f"iscsid could not start: {exc}")
            return None
        finally:
            log.close()
        deadline = _now() + 20
        while _now() < deadline:
            if proc.poll() is not None:
                self.warnings.append(f"iscsid exited at once with status {proc.returncode} (see iscsid.log)")
                return None
            if iscsid_listening():
                self.log(f"prep: iscsid pid {proc.pid} listening")
                return proc.pid
            time.sleep(0.02)
        self.warnings.append("iscsid did not open its control socket within 20 s")
        return proc.pid

    # ---- phase 2: serve requests ----------------------------------------------------------

    def serve(self) -> None:
        interval = IDLE_MIN
        last_activity = _now()
        while True:
            active = False
            try:
                names = os.listdir(self.req)
            except FileNotFoundError:
                names = []
            stop = False
            for name in sorted(names):
                if name.startswith("."):
                    continue
                if name == "stop":
                    stop = True
                elif name.endswith(".json"):
                    self._start(name[: -len(".json")])
                    active = True
                elif name.endswith(".cancel"):
                    self._cancel(name[: -len(".cancel")])
                    active = True
            if stop:
                self._shutdown()
                return
            now = _now()
            for job_id, job in list(self.running.items()):
                if job.proc.poll() is not None:
                    self._finish(job_id)
                    active = True
                elif job.deadline is not None and now > job.deadline and not job.timed_out:
                    job.timed_out = True
                    job.kill()
                    active = True
            if active:
                last_activity = _now()
                interval = IDLE_MIN
            elif _now() - last_activity > 0.5:
                interval = min(IDLE_MAX, interval * 2)
            self._wait(interval)

    def _wait(self, interval: float) -> None:
        """Sleep until the host rings or a running job exits (pidfd readable).

        Without a connected doorbell, sleep ``interval`` (the polling fallback). With one,
        up to :data:`BELL_WAIT`, or until the nearest job deadline.
        """
        fds = [job.pidfd for job in self.running.values() if job.pidfd is not None]
        state = self.bell.state() if self.bell is not None else _Bell.GONE
        if state == _Bell.RANG:  # a ring since req/ was last listed: list it again now
            return
        if self.bell is not None and state == _Bell.QUIET:
            fds.append(self.bell.fd)
            deadlines = [job.deadline for job in self.running.values() if job.deadline is not None]
            interval = max(0.0, min([BELL_WAIT, *(d - _now() for d in deadlines)]))
        if fds:
            select.select(fds, [], [], interval)
        else:
            time.sleep(interval)

    def _start(self, job_id: str) -> None:
        path = self.req / f"{job_id}.json"
        try:
            request = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self.log(f"request {job_id}: unreadable ({exc}); answering with an error")
            self._answer(job_id, {"error": f"unreadable request: {exc}"})
            _unlink(path)
            return
        _unlink(path)
        env = dict(self.base_env)
        env.update(request.get("env") or {})
        cwd = request.get("cwd") or self.config.get("cwd") or str(self.shared)
        out = LOCAL_DIR / f"{job_id}.out"
        err = LOCAL_DIR / f"{job_id}.err"
        if "argv" in request:
            argv = [str(a) for a in request["argv"]]
        else:
            script = LOCAL_DIR / f"{job_id}.sh"
            script.write_text(request.get("script", ""))
            argv = ["bash", str(script)]
        started = _now()
        try:
            with open(out, "wb") as fo, open(err, "wb") as fe:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=fo,
                    stderr=fe,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            self._answer(job_id, {"returncode": 127, "stdout": "", "stderr": f"{argv[0]}: {exc}\n", "duration": 0.0})
            return
        timeout = request.get("timeout")
        self.running[job_id] = _Job(proc, started, None if timeout is None else started + float(timeout))

    def _cancel(self, job_id: str) -> None:
        _unlink(self.req / f"{job_id}.cancel")
        job = self.running.get(job_id)
        if job is not None:
            job.cancelled = True
            job.kill()

    def _finish(self, job_id: str) -> None:
        job = self.running.pop(job_id)
        job.close()
        duration = _now() - job.started
        if job.timed_out or job.cancelled:
            # Whatever the script left behind in its process group goes too.
            job.kill()
        result = {
            "returncode": job.proc.returncode,
            "stdout": _read_and_remove(LOCAL_DIR / f"{job_id}.out"),
            "stderr": _read_and_remove(LOCAL_DIR / f"{job_id}.err"),
            "duration": duration,
            "timed_out": job.timed_out,
            "cancelled": job.cancelled,
        }
        _unlink(LOCAL_DIR / f"{job_id}.sh")
        self._answer(job_id, result)

    def _answer(self, job_id: str, result: dict[str, Any]) -> None:
        tmp = self.res / f".{job_id}.tmp"
        tmp.write_text(json.dumps(result))
        os.rename(tmp, self.res / f"{job_id}.json")

    def _shutdown(self) -> None:
        self.log("stop requested")
        for job_id, job in list(self.running.items()):
            job.cancelled = True
            job.kill()
            job.proc.wait()
            self._finish(job_id)
        _unlink(self.req / "stop")


class _Bell:
    """The guest end of the host's doorbell: a virtio serial port, read non-blocking.

    virtio_console's read says what state the port is in: data (the host rang), EAGAIN
    (the host is connected, nothing rang) or end of file (no host end is connected; the
    port then also polls readable forever, so it must stay out of ``select``).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def find(cls, name: str) -> _Bell | None:
        try:
            ports = sorted(Path("/sys/class/virtio-ports").iterdir())
        except OSError:
            return None
        for port in ports:
            try:
                if (port / "name").read_text().strip() == name:
                    return cls(os.open(f"/dev/{port.name}", os.O_RDONLY | os.O_NONBLOCK))
            except OSError:
                continue
        return None

    RANG, QUIET, GONE = "rang", "quiet", "gone"

    def state(self) -> str:
        """Drain the rings: RANG (the host rang since the last call), QUIET or GONE (no host end)."""
        rang = False
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return self.RANG if rang else self.QUIET
            except OSError:
                return self.GONE
            if not data:
                return self.RANG if rang else self.GONE
            rang = True


class _Job:
    def __init__(self, proc: subprocess.Popen[bytes], started: float, deadline: float | None) -> None:
        self.proc = proc
        self.started = started
        self.deadline = deadline
        self.timed_out = False
        self.cancelled = False
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (OSError, AttributeError):
            self.pidfd = None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _read_and_remove(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    _unlink(path)
    return data.decode("utf-8", "replace")


def pids(name: str) -> list[int]:
    """PIDs of the processes whose command name is ``name`` (what ``pidof`` finds, without a process)."""
    found = []
    want = name.encode() + b"\n"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fd = os.open(f"/proc/{entry}/comm", os.O_RDONLY)
            except OSError:
                continue
            try:
                if os.read(fd, 64) == want:
                    found.append(int(entry))
            except OSError:
                pass
            finally:
                os.close(fd)
    return found


def iscsid_listening() -> bool:
    """iscsid has opened its control socket (iscsiadm can talk to it)."""
    try:
        return ISCSID_SOCKET in Path("/proc/net/unix").read_text()
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: _vm_agent.py AGENT_DIR", file=sys.stderr)
        return 2
    agent = Agent(Path(argv[1]))
    try:
        info = agent.prepare()
    except Exception as exc:  # report, then still serve: the host decides what is fatal
        agent.log(f"prepare failed: {exc!r}")
        info = {"error": repr(exc), "warnings": agent.warnings, "uptime": _uptime()}
    tmp = agent.dir / ".ready.tmp"
    tmp.write_text(json.dumps(info))
    os.rename(tmp, agent.dir / "ready.json")
    print(f"iscsikit vm agent ready: {json.dumps(info)}", flush=True)
    agent.serve()
    agent.log("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
