"""The 0-db compatible server: connections, sessions and namespaces on disk.

One asyncio loop serves every client, as 0-db's single epoll thread does; commands
run one at a time, so a namespace needs no locks. Disk writes go to the page cache
before the reply (they survive a crash of this process); `sync=True` makes every
write reach the disk first, `sync_interval` flushes on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from zos.zdb import commands
from zos.zdb.datalog import DEFAULT_FILE_LIMIT, StorageError
from zos.zdb.namespace import DEFAULT, SETTINGS_FILE, Namespace, ZdbError, check_name
from zos.zdb.protocol import MAX_REQUEST, ProtocolError, RequestParser, RequestTooLarge, error

READ_SIZE = 256 * 1024
TIMEOUT = b"-Timeout\r\n"

log = logging.getLogger(__name__)


@dataclass
class Stats:
    boot: float = field(default_factory=time.time)
    clients: int = 0
    executed: int = 0
    failed: int = 0
    unauthorized: int = 0


@dataclass
class Watch:
    """A WAIT in progress: the command it waits for (or `*`), and its answer."""

    command: bytes
    timeout: float  # seconds
    answer: asyncio.Future[bytes]


@dataclass(eq=False)  # sessions are kept in a set, by identity
class Session:
    ns: Namespace
    writable: bool
    admin: bool
    nonce: str | None = None
    watch: Watch | None = None


class ZdbServer:
    def __init__(
        self,
        root: Path,
        admin_password: str | None = None,
        mode: str = "user",
        file_limit: int = DEFAULT_FILE_LIMIT,
        sync: bool = False,
        sync_interval: float = 0.0,
        protect: bool = False,
        max_clients: int = 1024,
    ) -> None:
        if mode not in ("user", "seq"):
            raise ValueError(f"mode {mode!r}: expected user or seq")
        self.root = root
        self.admin_password = admin_password or None
        self.mode = mode
        self.file_limit = file_limit
        self.sync = sync
        self.sync_interval = sync_interval
        self.protect = protect
        self.max_clients = max_clients
        self.namespaces: dict[str, Namespace] = {}
        self.stats = Stats()
        self.sessions: set[Session] = set()
        self.watchers: set[Session] = set()  # sessions inside a WAIT
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        self._syncer: asyncio.Task | None = None
        self.address: tuple[str, int] | None = None

    # -- lifetime ------------------------------------------------------------------

    def load(self) -> None:
        """Open every namespace under the root (creating `default`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".new-"):
                shutil.rmtree(path, ignore_errors=True)  # an NSNEW the crash cut short
            elif path.is_dir() and (path / SETTINGS_FILE).exists():
                self.namespaces[path.name] = self._open(path.name, path)
        if DEFAULT not in self.namespaces:
            self.namespaces[DEFAULT] = self._open(DEFAULT, self.root / DEFAULT)

    def _open(self, name: str, path: Path) -> Namespace:
        ns = Namespace.open(name, path, self.file_limit, self.sync, self.mode)
        log.info(
            "namespace %s: %d keys, %d bytes%s",
            name,
            ns.entries,
            ns.datasize,
            f", cut {ns.report.cut_bytes} torn bytes" if ns.report.cut_bytes else "",
        )
        return ns

    async def start(
        self, host: str | None = "127.0.0.1", port: int = 9900, socket_path: Path | None = None
    ) -> ZdbServer:
        if not self.namespaces:
            self.load()
        if host is not None:
            server = await asyncio.start_server(self._client, host, port, limit=4096)
            self._servers.append(server)
            self.address = server.sockets[0].getsockname()[:2]
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
            server = await asyncio.start_unix_server(self._client, socket_path, limit=4096)
            os.chmod(socket_path, 0o660)
            self._servers.append(server)
        if self.sync_interval > 0:
            self._syncer = asyncio.create_task(self._sync_loop())
        return self

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            for ns in list(self.namespaces.values()):
                with contextlib.suppress(OSError):
                    ns.log.sync()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._syncer is not None:
            self._syncer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for ns in self.namespaces.values():
            ns.close()
        self.namespaces.clear()

    # -- namespaces ----------------------------------------------------------------

    def create_namespace(self, raw: bytes) -> Namespace:
        name = check_name(raw)
        if name == DEFAULT or name.startswith(".new-"):
            raise ZdbError("This name is not allowed")
        if name in self.namespaces:
            raise ZdbError("This namespace is not available")
        target = self.root / name
        if os.path.ismount(target):
            return self._create_in_place(name, target)
        # Built aside and renamed into place, so a crash never leaves half a namespace.
        staging = self.root / f".new-{name}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            Namespace.open(name, staging, self.file_limit, self.sync, self.mode).close()
            os.rename(staging, self.root / name)
            ns = Namespace.open(name, self.root / name, self.file_limit, self.sync, self.mode)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise ZdbError(f"Could not create namespace ({e.strerror or e})") from None
        self.namespaces[name] = ns
        return ns

    def _create_in_place(self, name: str, path: Path) -> Namespace:
        """A namespace directory the admin mounted (the node's encrypted filesystem of one
        namespace) cannot be renamed into place: the namespace is made in it, or opened
        when it holds one already (made before a restart, mounted again since)."""
        try:
            ns = (
                self._open(name, path)
                if (path / SETTINGS_FILE).exists()
                else Namespace.open(name, path, self.file_limit, self.sync, self.mode)
            )
        except (StorageError, OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or e
            raise ZdbError(f"Could not create namespace ({why})") from None
        self.namespaces[name] = ns
        return ns

    def delete_namespace(self, ns: Namespace) -> None:
        del self.namespaces[ns.name]
        ns.destroy()

    def reload_namespace(self, ns: Namespace) -> Namespace:
        """RELOAD: read a namespace again from its files (settings and data), as a
        restart does; the clients in it stay in it. When its files cannot be read, the
        namespace stays as it was and the error is the answer."""
        try:
            fresh = self._open(ns.name, ns.path)
        except (StorageError, OSError, ValueError) as e:
            raise ZdbError(f"Cannot reload namespace ({e})") from None
        ns.close()
        self.namespaces[ns.name] = fresh
        for session in self.sessions:
            if session.ns is ns:
                session.ns = fresh
        return fresh

    def namespace(self, raw: bytes) -> Namespace:
        name = check_name(raw)
        ns = self.namespaces.get(name)
        if ns is None:
            raise ZdbError("Namespace not found")
        return ns

    def check_admin_password(self, given: bytes) -> bool:
        return self.admin_password is not None and hmac.compare_digest(
            given, self.admin_password.encode()
        )

    def new_session(self) -> Session:
        admin = self.admin_password is None  # 0-db: no admin password, everyone is admin
        return Session(self.namespaces[DEFAULT], writable=admin or not self.protect, admin=admin)

    @staticmethod
    def challenge() -> str:
        return secrets.token_hex(8)

    # -- WAIT ----------------------------------------------------------------------

    def watch(self, session: Session, command: bytes, timeout: float) -> None:
        answer = asyncio.get_running_loop().create_future()
        session.watch = Watch(command, timeout, answer)
        self.watchers.add(session)

    def _wake(self, by: Session, command: bytes) -> None:
        """`by` ran `command`: answer the WAITs of the other clients in its namespace."""
        for session in list(self.watchers):
            watch = session.watch
            if (
                session is not by
                and session.ns is by.ns
                and watch is not None
                and watch.command in (command, commands.WATCH_ANY)
            ):
                self._unwatch(session, b"+%s\r\n" % command)

    def _unwatch(self, session: Session, answer: bytes | None) -> None:
        watch, session.watch = session.watch, None
        self.watchers.discard(session)
        if watch is not None and answer is not None and not watch.answer.done():
            watch.answer.set_result(answer)

    async def _wait_for_watch(
        self,
        session: Session,
        watch: Watch,
        reader: asyncio.StreamReader,
        parser: RequestParser,
    ) -> bytes | None:
        """The answer to the session's WAIT; None when the client hung up meanwhile.

        Requests that come in the meantime are kept for after it (up to one request's
        worth; past that the client is not read until the answer)."""
        timer = asyncio.get_running_loop().call_later(
            watch.timeout, self._unwatch, session, TIMEOUT
        )
        read: asyncio.Future[bytes] | None = None
        try:
            while not watch.answer.done():
                if read is None and parser.buffered < MAX_REQUEST:
                    read = asyncio.ensure_future(reader.read(READ_SIZE))
                waiting = [watch.answer] if read is None else [watch.answer, read]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if read is not None and read.done():
                    data, read = read.result(), None
                    if not data:
                        return None
                    parser.feed(data)
            return watch.answer.result()
        finally:
            timer.cancel()
            self._unwatch(session, None)
            if read is not None:
                # The next read must wait until this one is gone; bytes it already
                # had stay with the reader, or come back here.
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    parser.feed(await read)

    # -- connections ---------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session: Session | None = None
        try:
            if len(self.sessions) >= self.max_clients:
                writer.write(error("Too many clients"))
                return
            session = self.new_session()
            self.sessions.add(session)
            self.stats.clients += 1
            await self._serve(session, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if session is not None:
                self.sessions.discard(session)
                self._unwatch(session, None)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Every request already received is answered with one write: a pipelining
        # client costs one read and one send per batch, not per command. Replies are
        # flushed at 1 MiB, so memory stays bounded whatever the client asks for.
        parser = RequestParser()
        out: list[bytes] = []
        size = 0

        async def flush() -> None:
            nonlocal size
            if out:
                writer.write(b"".join(out))
                out.clear()
                size = 0
                await writer.drain()

        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                if parser.pending:
                    out.append(error("Protocol error: connection closed inside a request"))
                await flush()
                return
            parser.feed(data)
            while True:
                try:
                    args = parser.next()
                except RequestTooLarge as e:
                    self.stats.failed += 1
                    out.append(error(str(e)))
                    continue
                except ProtocolError as e:
                    out.append(error(f"Protocol error: {e}"))
                    await flush()
                    return
                if args is None:
                    break
                if session.ns.deleted:
                    out.append(
                        error("Your active namespace is not available anymore (probably removed).")
                    )
                    await flush()
                    return
                for chunk in self.execute(session, args):
                    out.append(chunk)
                    size += len(chunk)
                    if size >= 1 << 20:
                        await flush()
                watch = session.watch
                if watch is not None:
                    await flush()  # another client may answer the WAIT meanwhile
                    answer = await self._wait_for_watch(session, watch, reader, parser)
                    if answer is None:
                        return
                    out.append(answer)
            await flush()

    def execute(self, session: Session, args: list[bytes]) -> Iterator[bytes]:
        """The reply to one command, in chunks (MGET streams its values)."""
        name = args[0].upper()
        handler = commands.HANDLERS.get(name)
        if handler is None:
            self.stats.failed += 1
            yield error("Command not supported")
            return
        try:
            reply = handler(self, session, args)
            if isinstance(reply, bytes):
                yield reply
            else:
                yield from reply
            self.stats.executed += 1
        except commands.Unauthorized:
            self.stats.unauthorized += 1
            yield error("Permission denied")
        except ZdbError as e:
            self.stats.failed += 1
            yield error(str(e))
        except Exception:
            # A bug must cost one reply, never the server or another client.
            log.exception("command %r failed", args[0][:32])
            self.stats.failed += 1
            yield error("Internal Error")
        if self.watchers:
            self._wake(session, name)  # whatever its answer was, as 0-db
