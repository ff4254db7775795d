"""The explorer's web server (aiohttp): GET pages, one event stream, two static files.

Every route answers GET (and HEAD) only, so nothing a page or a link does can ask this
process to change anything; in `mine` mode the only bus commands it can send are reads
(`zos.explorer.mine.ReadOnlyBus`). Responses carry a strict Content-Security-Policy (no
inline script, no other origin), and are never framed.

`mine` mode serves one person on one machine: it answers only requests for its own
loopback address (a page of another site that resolves its name to 127.0.0.1 is
refused), and only to a browser holding the session cookie, which the address it prints
(`/session?token=...`) sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from zos.bus import BusError
from zos.client import GridClientError
from zos.explorer import pages
from zos.explorer.live import Event, Live
from zos.explorer.markup import Markup, esc
from zos.explorer.mine import MyDeployments
from zos.explorer.query import NodeQuery, QueryError, parse_query
from zos.registry import Farm, Node

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FRAGMENT_HEADER = "X-Zos-Fragment"  # the page's script asks for the live region alone
SESSION_COOKIE = "zos_explorer_session"
KEEPALIVE = 15.0
STATIC_TYPES = {"explorer.css": "text/css", "explorer.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _static_files() -> dict[str, bytes]:
    root = importlib.resources.files("zos.explorer") / "static"
    return {name: (root / name).read_bytes() for name in STATIC_TYPES}


def _sse(event: Event) -> bytes:
    data = json.dumps({"version": event.version, "at": event.at, "nodes": event.nodes[:1000]})
    return f"id: {event.version}\nevent: {event.kind}\ndata: {data}\n\n".encode()


class Explorer:
    def __init__(self, live: Live, mine: MyDeployments | None = None) -> None:
        self.live = live
        self.mine = mine
        self.session = secrets.token_urlsafe(32) if mine is not None else ""
        self.allowed_hosts: set[str] = set()
        self.url = ""
        self._static = _static_files()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    # -- life ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._overview)
        app.router.add_get("/nodes", self._nodes)
        app.router.add_get("/nodes/{id}", self._node)
        app.router.add_get("/farms", self._farms)
        app.router.add_get("/farms/{id}", self._farm)
        app.router.add_get("/mine", self._mine)
        app.router.add_get("/mine/logs", self._logs)
        app.router.add_get("/events", self._events)
        app.router.add_get("/session", self._session)
        app.router.add_get("/static/{name}", self._static_file)
        return app

    async def start(self, host: str, port: int) -> Explorer:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        self.allowed_hosts = {f"{h}:{bound_port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        return self

    @property
    def session_url(self) -> str:
        """The address to open (in `mine` mode, the one that signs the browser in)."""
        return f"{self.url}/session?token={self.session}" if self.mine else self.url

    async def stop(self) -> None:
        self._closing.set()  # event streams end, so the server stops at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- guard -----------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.mine is not None:
            refused = self._refuse_in_mine_mode(request)
            if refused is not None:
                return self._secure(refused)
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = e
        return self._secure(response)

    def _refuse_in_mine_mode(self, request: web.Request) -> web.Response | None:
        if request.host not in self.allowed_hosts:
            return web.Response(
                status=421,
                text=f"this explorer answers only at {self.url} (not {request.host!r})",
            )
        if request.path == "/session" or request.path.startswith("/static/"):
            return None
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not hmac.compare_digest(cookie.encode(), self.session.encode()):
            return self._error(
                403,
                "Not signed in",
                "This explorer holds your key: open the address `zos explorer serve --mine` "
                "printed (it signs this browser in).",
            )
        return None

    @staticmethod
    def _secure(response: web.StreamResponse) -> web.StreamResponse:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- helpers ---------------------------------------------------------------------

    def _view(self) -> pages.View | None:
        snap = self.live.snapshot
        if snap is None:
            return None
        return pages.View(
            snapshot=snap,
            history=self.live.history,
            version=self.live.version,
            every=self.live.every,
            error=self.live.error,
        )

    def _error(self, status: int, title: str, text: str) -> web.Response:
        view = self._view()
        if view is None:
            body = f"<!doctype html><title>{esc(title)}</title><p>{esc(text)}</p>"
        else:
            body = pages.page(view, title, pages.message(text), path="")
        return web.Response(status=status, text=body, content_type="text/html")

    def _render(
        self,
        request: web.Request,
        title: str,
        live: Callable[[pages.View], Markup],
        *,
        before: Markup | None = None,
        refresh: str = "update",
        status: int = 200,
    ) -> web.Response:
        view = self._view()
        if view is None:
            return web.Response(
                status=503,
                text=f"the registry has not answered yet: {self.live.error}",
            )
        region = live(view)
        if request.headers.get(FRAGMENT_HEADER) == "live":
            html = str(region)
        else:
            html = pages.page(
                view, title, region, path=request.path, before=before, refresh=refresh
            )
        response = web.Response(status=status, text=html, content_type="text/html")
        response.headers["X-Zos-Version"] = str(view.version)
        return response

    @staticmethod
    def _id(request: web.Request) -> int | None:
        text = request.match_info["id"]
        return int(text) if text.isdigit() and len(text) < 16 else None

    # -- pages -----------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        return self._render(request, "The grid", pages.overview)

    async def _nodes(self, request: web.Request) -> web.StreamResponse:
        view = self._view()
        form = pages.nodes_form(view.snapshot, request.query) if view else None
        try:
            query = parse_query(request.query)
        except QueryError as e:
            text = f"{e} (nothing was searched)"
            return self._render(
                request, "Nodes", lambda v: pages.message(text), before=form, status=400
            )
        return self._render(request, "Nodes", lambda v: pages.nodes_live(v, query), before=form)

    def _named(self, request: web.Request, kind: str) -> Node | Farm | web.Response:
        """The node or farm the path names, or a 404 page saying it is not on the grid."""
        view, key = self._view(), self._id(request)
        entities: dict[int, Any] = {}
        if view is not None:
            entities = view.snapshot.nodes if kind == "node" else view.snapshot.farms
        found = entities.get(key) if key is not None else None
        if found is None:
            shown = request.match_info["id"][:20]
            return self._error(404, f"No such {kind}", f"{kind} {shown!r} is not on the grid")
        return found

    async def _node(self, request: web.Request) -> web.StreamResponse:
        node = self._named(request, "node")
        if not isinstance(node, Node):
            return node  # type: ignore[return-value]
        return self._render(
            request,
            f"Node {node.id}",
            lambda v: pages.node_live(v, v.snapshot.nodes.get(node.id, node)),
        )

    async def _farms(self, request: web.Request) -> web.StreamResponse:
        return self._render(request, "Farms", pages.farms_live)

    async def _farm(self, request: web.Request) -> web.StreamResponse:
        farm = self._named(request, "farm")
        if not isinstance(farm, Farm):
            return farm  # type: ignore[return-value]
        query = NodeQuery(farm=farm.id)
        return self._render(request, f"Farm {farm.name}", lambda v: pages.farm_live(v, farm, query))

    async def _mine(self, request: web.Request) -> web.StreamResponse:
        if self.mine is None:
            return self._render(request, "My deployments", lambda v: pages.mine_elsewhere())
        try:
            deployments = await self.mine.list()
        except (GridClientError, BusError) as e:
            return self._error(502, "My deployments", f"cannot read your deployments: {e}")
        twin = self.mine.twin_id
        return self._render(
            request,
            "My deployments",
            lambda v: pages.mine_live(twin, deployments),
            refresh="tick",
        )

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        if self.mine is None:
            return self._render(request, "Logs", lambda v: pages.mine_elsewhere())
        deployment = request.query.get("deployment", "")[:100]
        machine = request.query.get("machine", "")[:100]
        if not deployment or not machine:
            return self._error(400, "Logs", "deployment and machine are both needed")
        try:
            text = await self.mine.logs(deployment, machine)
        except (GridClientError, BusError) as e:
            return self._error(404, "Logs", str(e))
        return self._render(
            request,
            f"Output of {machine}",
            lambda v: pages.logs_live(deployment, machine, text),
            refresh="tick",
        )

    async def _session(self, request: web.Request) -> web.StreamResponse:
        if self.mine is None:
            raise web.HTTPFound("/")
        token = request.query.get("token", "")
        if not hmac.compare_digest(token.encode(), self.session.encode()):
            return self._error(403, "Not signed in", "this sign-in address is not this explorer's")
        response = web.HTTPSeeOther("/mine")
        response.set_cookie(
            SESSION_COOKIE, self.session, httponly=True, samesite="Strict", path="/"
        )
        return response

    async def _static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self._static:
            raise web.HTTPNotFound()
        response = web.Response(body=self._static[name], content_type=STATIC_TYPES[name])
        response.headers["Cache-Control"] = "max-age=300"
        return response

    # -- live ------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        self._secure(response)
        await response.prepare(request)
        since = request.headers.get("Last-Event-ID") or request.query.get("since", "")
        closing = asyncio.create_task(self._closing.wait())
        try:
            async with self.live.listen() as queue:
                await response.write(b"retry: 2000\n\n")
                if since != str(self.live.version):  # it changed while the page loaded
                    now = self.live.snapshot.taken_at if self.live.snapshot else 0.0
                    await response.write(_sse(Event("update", self.live.version, now)))
                while not self._closing.is_set():
                    getting = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait(
                        {getting, closing}, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getting in done:
                        await response.write(_sse(getting.result()))
                    else:
                        getting.cancel()
                        if not done:
                            await response.write(b": keepalive\n\n")
        except ConnectionResetError:
            pass  # the page went away
        finally:
            closing.cancel()
            with contextlib.suppress(Exception):
                await response.write_eof()
        return response
