"""The ``ldap`` driver's login agent: one resident process per driver user that has ldap3 (and the
TLS set-up) loaded, so a login does not pay for importing them (some 40 ms of a 65 ms login).

``authenticate`` asks the agent over a Unix socket in the driver user's private directory
(MAPPING_DIR, 0700); whatever goes wrong with the agent (none yet, a stale socket, an agent
that does not acknowledge the request within :data:`ACK_TIMEOUT`, one running older code or
another environment), the login is done in the ``authenticate`` process itself, as without an
agent, and a fresh agent is started for the next one. The agent runs exactly the code
``authenticate`` would (:func:`one_drivers.auth.ldap.authenticate.login`), bounded by the
caller's remaining deadline, and answers the same line or the same error. Both ends check
that the other is the same user (``SO_PEERCRED``); passwords never leave that user's processes.
The agent exits after AGENT_IDLE seconds without a login (``AGENT_IDLE=0``: no agent).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from one_drivers.core.contract import Call
from one_drivers.core.errors import (
    ActionFailed,
    BackendTimeout,
    BackendUnavailable,
    BadInput,
    DriverError,
    PermissionDenied,
)

ACK_TIMEOUT = 0.5  # an agent that has not taken the request by then is stuck: do it here
MAX_MESSAGE = 1 << 20
MAX_SOCKET_PATH = 108  # sun_path, with its terminating NUL
SOCKET, LOCK, LOG = "agent.sock", "agent.lock", "agent.log"
# what the agent's answers depend on besides the request: it serves no caller that differs
ENV_KEYS = ("ONE_XMLRPC", "ONE_AUTH", "ONE_LOCATION", "HOME", "ONE_DRIVERS_REMOTES")
ERRORS: dict[str, type[DriverError]] = {cls.__name__: cls for cls in (
    ActionFailed, BackendTimeout, BackendUnavailable, BadInput, PermissionDenied)}


def folder(settings: Any) -> str:
    return os.path.expanduser(settings.get("MAPPING_DIR") or "~/.one-drivers/auth")


def stamp() -> str:
    """This code, interpreter and environment: a request with another stamp retires the agent
    (a package upgrade, another oned) instead of being answered by what it has loaded."""
    here = Path(__file__).resolve().parent
    parts = [sys.executable, *(f"{p.name}:{p.stat().st_mtime_ns}"
                               for p in sorted(here.glob("*.py")))]
    parts += [f"{k}={os.environ.get(k, '')}" for k in ENV_KEYS]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _peer_uid(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def _send(sock: socket.socket, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _receive(sock: socket.socket, deadline: float) -> dict[str, Any]:
    """One length-prefixed JSON message, read by ``deadline`` (monotonic) however it trickles."""
    buf = b""
    need = 4
    while len(buf) < need:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("message")
        sock.settimeout(left)
        chunk = sock.recv(min(65536, need - len(buf)))
        if not chunk:
            raise ConnectionError("closed mid-message")
        buf += chunk
        if need == 4 and len(buf) == 4:
            (size,) = struct.unpack("!I", buf)
            if size > MAX_MESSAGE:
                raise ConnectionError("message too large")
            need = 4 + size
    return dict(json.loads(buf[4:]))


# -- the caller's side -----------------------------------------------------------------------
def ask(call: Call) -> str | None:
    """The agent's answer to this login, or None when the caller must log in itself (then an
    agent is started for the next login). Raises the login's own error when the agent gave one."""
    idle = call.settings.float("AGENT_IDLE", 300)
    if idle <= 0:
        return None
    where = folder(call.settings)
    if len(os.fsencode(os.path.join(where, SOCKET))) >= MAX_SOCKET_PATH:
        return None  # no Unix socket can live there: no agent
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ACK_TIMEOUT)
        pid = 0
        try:
            sock.connect(os.path.join(where, SOCKET))  # none yet, or a dead one's socket
            pid, uid = _peer_uid(sock)
            if uid != os.geteuid():  # never hand a password to another user's process
                return None
            _send(sock, {"stamp": stamp(), "settings": call.settings.flat(),
                         "username": call.doc.username, "secret": call.doc.secret,
                         "remaining": call.deadline.remaining()})
            ack = sock.recv(1)  # "-": it serves other code or another environment, retiring
        except OSError as exc:  # TimeoutError included: stuck (stopped, wedged)
            if isinstance(exc, TimeoutError) and pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)  # out of the way; ours (same UID, checked)
            ack = b""
        if ack != b"+":
            start(where, idle)
            return None
        try:
            reply = _receive(sock, time.monotonic() + call.deadline.remaining())
        except TimeoutError:
            raise BackendTimeout("the LDAP login did not finish within the action's deadline",
                                 hint="check that the directory answers") from None
        except (OSError, ValueError):  # it died under way: the login is done here after all
            start(where, idle)
            return None
    finally:
        sock.close()
    if "answer" in reply:
        return str(reply["answer"])
    error = ERRORS.get(str(reply.get("error")), ActionFailed)
    raise error(str(reply.get("message")), hint=str(reply.get("hint") or ""))


def start(where: str, idle: float) -> None:
    """An agent in the background, detached from the caller's session (oned kills a timed-out
    driver's process group; the agent is not part of it). Two starting at once: one keeps the
    lock, the other exits."""
    import subprocess

    code = (f"import sys; sys.path[:] = {sys.path!r}; "
            "from one_drivers.auth.ldap.agent import main; main()")
    with contextlib.suppress(OSError):
        subprocess.Popen([sys.executable, "-I", "-S", "-c", code, where, str(idle)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


# -- the agent's side ------------------------------------------------------------------------
class Agent:
    def __init__(self, where: str, idle: float) -> None:
        self.where = where
        self.idle = idle
        self.stamp = stamp()
        self.busy = 0
        self.last = time.monotonic()
        self.retire = threading.Event()
        self.lock = threading.Lock()

    def serve(self) -> None:
        import fcntl

        from one_drivers.core.safefs import open_trusted_dir

        os.close(open_trusted_dir(self.where, create_mode=0o700, private=True))
        lock_fd = os.open(os.path.join(self.where, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                          0o600)
        end = time.monotonic() + 3  # an agent that retires or was just killed lets go soon
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > end:
                    return  # another agent runs
                time.sleep(0.05)
        path = os.path.join(self.where, SOCKET)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead agent's (we hold the lock; the directory is private)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            server.bind(path)
        finally:
            os.umask(old)
        server.listen(64)
        server.settimeout(1)
        # loaded once here, before the first login: what the agent is for
        import one_drivers.auth.ldap.authenticate
        import one_drivers.auth.ldap.directory  # noqa: F401

        with contextlib.suppress(ImportError):
            import ldap3  # noqa: F401
        try:
            while not self.retire.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    with self.lock:
                        if not self.busy and time.monotonic() - self.last > self.idle:
                            break
                    continue
                with self.lock:
                    self.busy += 1
                    self.last = time.monotonic()
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        finally:
            with contextlib.suppress(OSError):  # ours: no other agent ran while we held the lock
                os.unlink(path)
            server.close()
            deadline = time.monotonic() + 60  # logins under way finish (each has a deadline)
            while self.busy and time.monotonic() < deadline:
                time.sleep(0.05)

    def handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                _pid, uid = _peer_uid(conn)
                if uid != os.geteuid():
                    return
                request = _receive(conn, time.monotonic() + 2)
                if request.get("stamp") != self.stamp:
                    conn.sendall(b"-")
                    self.retire.set()
                    return
                conn.sendall(b"+")
                reply = self.login(request)
                conn.settimeout(5)
                _send(conn, reply)
        except (OSError, ValueError):
            return
        finally:
            with self.lock:
                self.busy -= 1
                self.last = time.monotonic()

    def login(self, request: dict[str, Any]) -> dict[str, Any]:
        from one_drivers.auth.ldap.authenticate import login
        from one_drivers.core.config import Settings
        from one_drivers.core.documents import AuthN
        from one_drivers.core.retry import Deadline
        from one_drivers.core.xmlview import escape, parse_xml

        user = str(request.get("username", ""))
        call = Call("auth", "ldap", "authenticate", {})
        call.settings = Settings([dict(request.get("settings") or {})])
        call.deadline = Deadline(max(0.1, float(request.get("remaining", 0)) - 0.05))
        call.doc = AuthN(parse_xml(f"<AUTHN><USERNAME>{escape(user)}</USERNAME>"
                                   f"<SECRET>{escape(str(request.get('secret', '')))}</SECRET>"
                                   "</AUTHN>", what="the login request", root="AUTHN"))
        try:
            reply: dict[str, Any] = {"answer": login(call)}
            outcome = "signed on"
        except DriverError as exc:  # the nearest kind the caller knows: same exit code
            kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in ERRORS),
                        "ActionFailed")
            reply = {"error": kind, "message": exc.message, "hint": exc.hint}
            outcome = f"refused ({kind})"
        except Exception as exc:  # a bug: the caller reports it, the agent goes on
            reply = {"error": "ActionFailed", "message": f"internal error in the login agent "
                                                         f"({type(exc).__name__})"}
            outcome = "internal error"
        self.note(f"{user}: {outcome}")
        return reply

    def note(self, line: str) -> None:
        """One line per login in the agent's log (private directory; never a password)."""
        with contextlib.suppress(OSError):
            fd = os.open(os.path.join(self.where, LOG),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {os.getpid()} {line}\n")


def main() -> None:
    import signal

    where, idle = sys.argv[1], float(sys.argv[2])
    agent = Agent(where, idle)
    # stopped like a service (SIGTERM): the logins under way finish, the socket goes
    signal.signal(signal.SIGTERM, lambda _signum, _frame: agent.retire.set())
    with contextlib.suppress(Exception):  # detached: nobody to tell; the caller logs in itself
        agent.serve()
