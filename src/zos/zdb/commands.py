"""One function per 0-db command: check the arguments, call the namespace, encode.

Argument rules and reply texts follow 0-db's `zdbd/commands*.c`, so its clients
(rfs, the zos node, redis-cli) see what they expect.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from zos.zdb.datalog import StorageError
from zos.zdb.namespace import DEFAULT, ZdbError
from zos.zdb.protocol import (
    MAX_KEY,
    NIL,
    OK,
    array,
    bulk,
    error,
    integer,
    simple,
)

if TYPE_CHECKING:
    from zos.zdb.server import Session, ZdbServer

log = logging.getLogger(__name__)

REVISION = "zos-zdb 1"
WAIT_DEFAULT_MS = 5000
WAIT_MAX_MS = 30 * 60 * 1000  # as 0-db
WATCH_ANY = b"*"
Reply = bytes | Iterator[bytes]
Handler = Callable[["ZdbServer", "Session", list[bytes]], Reply]
HANDLERS: dict[bytes, Handler] = {}


class Unauthorized(Exception):
    """An admin command from a client that is not admin."""


def command(*names: str) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name.encode()] = fn
        return fn

    return add


def exact(args: list[bytes], n: int, empty_ok: bool = False) -> None:
    if len(args) != n:
        raise ZdbError("Unexpected arguments")
    if not empty_ok and any(not a for a in args):
        raise ZdbError("Invalid argument")


def key_arg(args: list[bytes]) -> bytes:
    exact(args, 2)
    if len(args[1]) > MAX_KEY:
        raise ZdbError("Invalid key")
    return args[1]


def admin(session: Session) -> None:
    if not session.admin:
        raise Unauthorized


def timestamp(raw: bytes) -> int:
    if not raw.isdigit() or int(raw) >= 1 << 32:
        raise ZdbError("Invalid timestamp")
    return int(raw)


def sha1_answer(nonce: str, password: str) -> bytes:
    return hashlib.sha1(f"{nonce}:{password}".encode()).hexdigest().encode()


def check_secure(session: Session, answer: bytes, password: str) -> None:
    """`answer` must be sha1hex("nonce:password") for this session's challenge.

    A malformed answer leaves the challenge in place, as 0-db does; any real guess
    uses it up, so a challenge answers once (0-db keeps it after SELECT: we don't).
    """
    if session.nonce is None:
        raise ZdbError("No CHALLENGE requested, secure authentication not available")
    if len(answer) != 40:
        raise ZdbError("Invalid hash length")
    nonce, session.nonce = session.nonce, None
    if not hmac.compare_digest(answer.lower(), sha1_answer(nonce, password)):
        raise ZdbError("Access denied")


# -- server --------------------------------------------------------------------------


@command("PING")
def ping(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    return simple("PONG")


@command("TIME")
def time_(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    now = time.time_ns() // 1000
    return array([bulk(b"%d" % (now // 1_000_000)), bulk(b"%d" % (now % 1_000_000))])


@command("AUTH")
def auth(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    if len(args) == 3:
        if args[1].upper() != b"SECURE":
            raise ZdbError("Only SECURE extra method supported")
        if args[2].upper() == b"CHALLENGE":
            session.nonce = server.challenge()
            return simple(session.nonce)
        if server.admin_password is None:
            raise ZdbError("Authentication disabled")
        check_secure(session, args[2], server.admin_password)
    elif len(args) == 2:
        if server.admin_password is None:
            raise ZdbError("Authentication disabled")
        if len(args[1]) > 128:
            raise ZdbError("Password too long")
        if not server.check_admin_password(args[1]):
            raise ZdbError("Access denied")
    else:
        raise ZdbError("Unexpected arguments")
    session.admin = True
    if session.ns.name == DEFAULT:
        session.writable = True
    return OK


@command("INFO")
def info(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    now = time.time()
    written = sum(ns.log.bytes_written for ns in server.namespaces.values())
    text = "\n".join(
        [
            "# server",
            "server_name: 0-db (zdb)",
            f"server_revision: {REVISION}",
            f"boot_time: {int(server.stats.boot)}",
            f"uptime: {int(now - server.stats.boot)}",
            "",
            "# clients",
            f"clients_lifetime: {server.stats.clients}",
            f"clients_connected: {len(server.sessions)}",
            "",
            "# internals",
            "sequential_key_size: 8",
            f"mode: {server.mode}",
            "",
            "# stats",
            f"commands_executed: {server.stats.executed}",
            f"commands_failed: {server.stats.failed}",
            f"commands_unauthorized: {server.stats.unauthorized}",
            f"data_disk_write_bytes: {written}",
            f"data_disk_write_mb: {written / 1048576:.2f}",
        ]
    )
    return bulk(text.encode() + b"\n")


@command("STOP")
def stop(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    # Only 0-db's debug builds stop on request; a release build answers this.
    raise ZdbError("Unauthorized")


@command("WAIT")
def wait(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    """WAIT command [timeout-ms]: answered `+COMMAND` once another client runs that
    command (or any, for `*`) in this namespace, `-Timeout` if none does in time.

    Deviation: the connection waits for it; 0-db goes on answering what the client
    sends meanwhile, and WAIT's answer comes after those, out of order.
    """
    if len(args) not in (2, 3):
        raise ZdbError("Invalid arguments")
    name = args[1].upper()
    if name != WATCH_ANY and name not in HANDLERS:
        raise ZdbError("Unknown command to watch")
    timeout = WAIT_DEFAULT_MS
    if len(args) == 3:
        raw = args[2]
        if len(raw) > 16 or not raw.isdigit() or not 100 <= int(raw) <= WAIT_MAX_MS:
            raise ZdbError("Invalid timeout")
        timeout = int(raw)
    server.watch(session, name, timeout / 1000)
    return b""  # the answer comes from the command watched, or the timeout


# -- namespaces ----------------------------------------------------------------------


@command("NSNEW")
def nsnew(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    admin(session)
    exact(args, 2)
    server.create_namespace(args[1])
    return OK


@command("NSDEL")
def nsdel(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    admin(session)
    exact(args, 2)
    if args[1] == DEFAULT.encode():
        raise ZdbError("Cannot remove default namespace")
    try:
        ns = server.namespace(args[1])
    except ZdbError:
        raise ZdbError("This namespace doesn't exists") from None
    if session.ns is ns:
        raise ZdbError("Cannot remove namespace you're currently using.")
    server.delete_namespace(ns)
    return OK


@command("RELOAD")
def reload(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    admin(session)
    exact(args, 2)
    server.reload_namespace(server.namespace(args[1]))
    return OK


@command("NSLIST")
def nslist(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    # Deviation from 0-db: a tenant sees public namespaces and its own, not everyone's.
    names = [
        name
        for name, ns in server.namespaces.items()
        if session.admin or ns.settings.public or ns is session.ns
    ]
    return array([bulk(n.encode()) for n in names])


@command("NSINFO")
def nsinfo(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    exact(args, 2)
    ns = server.namespace(args[1])
    if not (session.admin or ns.settings.public or ns is session.ns):
        raise ZdbError("Namespace protected and private")
    return bulk(ns.info(session.admin).encode())


_FLAGS = {"public", "worm"}


@command("NSSET")
def nsset(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    admin(session)
    exact(args, 4)
    ns = server.namespace(args[1])
    prop = args[2].decode(errors="replace")
    if len(args[3]) > 63:
        raise ZdbError("Argument too long")
    value = args[3].decode(errors="replace")
    settings = ns.settings
    if ns.name == DEFAULT and prop not in ("mode", "lock", "freeze"):
        raise ZdbError("Cannot update default namespace")
    if prop == "mode":
        if value not in ("user", "seq"):
            raise ZdbError("Invalid property value (expected: user, seq)")
        if not ns.fresh:
            raise ZdbError("Cannot change mode of used namespace")
        settings.mode = value
    elif prop == "maxsize":
        if not args[3].isdigit():  # ASCII digits only: str.isdigit() takes "²" too
            raise ZdbError("Invalid property value (expected: a size in bytes)")
        settings.maxsize = int(value)
    elif prop == "password":
        try:
            password = args[3].decode()
        except UnicodeDecodeError:
            # Stored as text: bytes that are not UTF-8 could never be given back.
            raise ZdbError("Invalid property value (expected: UTF-8 text)") from None
        settings.password = None if password == "*" else password
    elif prop in _FLAGS:
        setattr(settings, prop, value[:1] == "1")
    elif prop in ("lock", "freeze"):
        # 0-db keeps one lock state: `lock 1` and `freeze 1` replace each other, and
        # either one set to 0 unlocks.
        on = value[:1] == "1"
        settings.lock, settings.freeze = on and prop == "lock", on and prop == "freeze"
    else:
        raise ZdbError("Invalid property")
    ns.save_settings()
    return OK


@command("SELECT")
def select(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    if len(args) < 2:
        raise ZdbError("Invalid argument")
    if len(args) > 4:
        raise ZdbError("Too many arguments")
    ns = server.namespace(args[1])
    password = ns.settings.password
    if ns.name == DEFAULT and server.protect:
        # 0-db --protect: the default namespace's password is the admin password.
        password = server.admin_password
    writable = True
    if password:
        if len(args) == 2:
            if not ns.settings.public:
                raise ZdbError("Namespace protected and private")
            writable = False
        elif len(args) == 3:
            if len(args[2]) > 255:
                raise ZdbError("Password too long")
            if not hmac.compare_digest(args[2], password.encode()):
                raise ZdbError("Access denied")
        else:
            if args[2].upper() != b"SECURE":
                raise ZdbError("Only SECURE extra method supported")
            check_secure(session, args[3], password)
    if ns.name == DEFAULT and server.protect and session.admin:
        writable = True  # deviation: an AUTHed admin needs no password to write there
    session.ns, session.writable = ns, writable
    return OK


@command("DBSIZE")
def dbsize(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    return integer(session.ns.entries)


@command("FLUSH")
def flush(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    ns = session.ns
    if ns.settings.public or not ns.settings.password or not session.writable:
        raise ZdbError("Flushing public namespace denied")
    ns.writable()
    try:
        ns.flush()
    except (OSError, StorageError):
        raise ZdbError("Internal Server Error") from None
    return OK


# -- keys ----------------------------------------------------------------------------


def _writable(session: Session) -> None:
    if not session.writable:
        raise ZdbError("Namespace is in read-only mode")


@command("SET", "SETX")
def set_(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    ts = None
    if len(args) == 4:
        admin(session)
        ts = timestamp(args[3])
    elif len(args) != 3:
        raise ZdbError("Unexpected arguments")
    if len(args[1]) > MAX_KEY:
        raise ZdbError("Key too large")
    _writable(session)
    stored = session.ns.set(args[1], args[2], ts)
    return bulk(stored)


@command("GET")
def get(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    return bulk(session.ns.get(key_arg(args)))


@command("MGET")
def mget(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    if len(args) < 2:
        raise ZdbError("Invalid arguments")
    if any(len(k) > MAX_KEY for k in args[1:]):
        raise ZdbError("Invalid key")
    session.ns.readable()
    return _mget(session, args[1:])


def _mget(session: Session, keys: list[bytes]) -> Iterator[bytes]:
    yield b"*%d\r\n" % len(keys)
    for key in keys:  # one value at a time: the reply is never all in memory
        if session.ns.deleted:
            # NSDEL came while this reply streamed: its files are gone, not damaged.
            yield error("Your active namespace is not available anymore (probably removed).")
            continue
        try:
            yield bulk(session.ns.get(key))
        except (ZdbError, StorageError, OSError) as e:
            yield error(str(e) or "Internal Error")
        except Exception:
            # The array is announced: one item per key whatever happens, or the client
            # would read the next reply as part of this one.
            log.exception("MGET of %r failed", key[:32])
            yield error("Internal Error")


@command("DEL")
def delete(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    ts = None
    if len(args) == 3:
        admin(session)
        ts = timestamp(args[2])
    else:
        exact(args, 2)
    if len(args[1]) > MAX_KEY:
        raise ZdbError("Invalid key")
    _writable(session)
    session.ns.delete(args[1], ts)
    return OK


@command("EXISTS")
def exists(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    return integer(int(session.ns.slot(key_arg(args)) is not None))


@command("CHECK")
def check(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    ok = session.ns.check(key_arg(args))
    return NIL if ok is None else integer(int(ok))


@command("LENGTH")
def length(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    slot = session.ns.slot(key_arg(args))
    return NIL if slot is None else integer(slot.length)


@command("KEYTIME")
def keytime(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    slot = session.ns.slot(key_arg(args))
    return NIL if slot is None else integer(slot.timestamp)


@command("KEYCUR")
def keycur(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    return bulk(session.ns.cursor(key_arg(args)))


def _scan(session: Session, args: list[bytes], reverse: bool) -> Reply:
    if len(args) > 2:
        raise ZdbError("Unexpected arguments")
    cursor, found = session.ns.scan(args[1] if len(args) == 2 else None, reverse)
    items = [array([bulk(k), integer(n), integer(ts)]) for k, n, ts in found]
    return array([bulk(cursor), array(items)])


@command("SCAN", "SCANX")
def scan(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    return _scan(session, args, reverse=False)


@command("RSCAN")
def rscan(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    return _scan(session, args, reverse=True)


@command("KSCAN")
def kscan(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    """KSCAN prefix: every live key that starts with it, in one reply `[0, [keys]]`
    (as 0-db's debug builds; its release builds answer that the command is disabled)."""
    ns = session.ns
    if ns.settings.mode != "user":
        raise ZdbError("Index running mode doesn't support this feature")
    exact(args, 2)
    keys = ns.keys_with_prefix(args[1])
    if not keys:
        raise ZdbError("No keys match")
    return _kscan(keys)


def _kscan(keys: list[bytes]) -> Iterator[bytes]:
    yield b"*2\r\n$1\r\n0\r\n*%d\r\n" % len(keys)
    for key in keys:  # streamed: a namespace of millions of keys is never one bytes
        yield bulk(key)


@command("HISTORY")
def history(server: ZdbServer, session: Session, args: list[bytes]) -> Reply:
    if len(args) not in (2, 3):
        raise ZdbError("Invalid arguments")
    before, ts, value = session.ns.history(args[1], args[2] if len(args) == 3 else None)
    return array([bulk(before), bulk(b"%d" % ts), bulk(value)])
