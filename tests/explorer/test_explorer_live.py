"""The explorer as `zos explorer serve` runs it, on a real nats-server with the grid's
authorization and a real registry service (`zos registry serve --down-after 4`, so a node
is down 4 s after its last heartbeat): it connects with its own key and trusts only
answers signed by the registry key it was given (another key: it refuses to start); only
GET is answered and nothing changes the registry; a bad search is refused naming the
field; the event stream announces a node that changed; `--mine` answers only its own
loopback address and a signed-in browser; in Chromium, a node whose heartbeats stop
turns red without a reload; the node list's first paint with 10,000 registered nodes
beside a few (printed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import explorer_browser as browser
import pytest
from explorer_helpers import ExplorerProcess, seed_nodes
from selenium import webdriver

from zos.bus import BusError
from zos.grid.natsserver import NatsServer
from zos.identity import Identity, new_mnemonic, write_key_file
from zos.registry import Capacity, Location, Node, PublicConfig, RegistryClient

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(600)]

GiB = 1 << 30
DOWN_AFTER = 4
MANY = 10_000
ROUTES = ["/", "/nodes", "/nodes/1", "/farms", "/farms/1", "/mine", "/mine/logs", "/events"]


@dataclass
class Bus:
    url: str  # NATS
    registry: Identity  # the registry service's key (the test plays the grid's operator)

    @property
    def registry_key(self) -> str:
        return self.registry.public_hex

    def client(self, identity: Identity | None = None) -> RegistryClient:
        return RegistryClient(
            self.url, identity or Identity.generate(), registry_key=self.registry.public_key
        )

    def explorer_args(self, *args: str) -> list[str]:
        return ["--nats", self.url, "--registry-key", self.registry_key, *args]


@dataclass
class Grid(Bus):
    farm_id: int
    token: str
    explorer: ExplorerProcess
    tmp: Path


async def _farm(bus: Bus) -> tuple[int, str]:
    """A farm, once the registry answers (nats-server lets nobody in before its callout
    does)."""
    deadline = time.monotonic() + 60
    while True:
        farmer = bus.client()
        try:
            await farmer.connect()
            await farmer.register_twin()
            farm = await farmer.create_farm("farm-live")
            return farm.id, await farmer.farm_join_token(farm.id)
        except BusError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await farmer.close()


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    tmp = tmp_path_factory.mktemp("explorer-live")
    registry_identity = Identity.generate()
    registry_key_file = tmp / "registry-key.json"
    write_key_file(registry_key_file, registry_identity)
    nats = NatsServer(store_dir=tmp / "nats", registry_key=registry_identity.public_key).start()
    log = open(tmp / "registry.log", "wb")  # noqa: SIM115 - closed below
    registry = subprocess.Popen(
        [
            *(sys.executable, "-m", "zos.cli", "registry", "serve", "--nats", nats.url),
            *("--key-file", str(registry_key_file)),
            *("--down-after", str(DOWN_AFTER), "--log-level", "warning"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    explorer = None
    try:
        bus = Bus(nats.url, registry_identity)
        farm_id, token = asyncio.run(_farm(bus))
        key = tmp / "explorer-key.json"
        explorer = ExplorerProcess(*bus.explorer_args("--key-file", str(key), "--every", "1"))
        assert key.stat().st_mode & 0o777 == 0o600  # its own key, made on first start
        yield Grid(bus.url, bus.registry, farm_id, token, explorer, tmp)
    finally:
        if explorer is not None:
            explorer.stop()
        registry.terminate()
        registry.wait(15)
        log.close()
        nats.stop()


async def add_node(
    grid: Grid, *, i: int = 0, city: str = "", domain: str = ""
) -> tuple[RegistryClient, Node]:
    client = await grid.client().connect()
    await client.register_twin()
    cap = Capacity(cru=1 + i % 32, mru=(1 + i % 64) * GiB, sru=(10 + i % 500) * GiB)
    node = await client.register_node(
        grid.farm_id,
        grid.token,
        cap,
        location=Location(country="BE", city=city),
        public_config=PublicConfig(domain=domain),
    )
    return client, node


async def next_update(stream: aiohttp.ClientResponse, node_id: int) -> None:
    """Read the event stream until an update names `node_id`."""
    event = ""
    async for line in stream.content:
        text = line.decode().strip()
        if text.startswith("event: "):
            event = text[7:]
        elif event == "update" and text.startswith("data: "):
            changed = json.loads(text[6:])["nodes"]
            if node_id in changed:
                return
    raise AssertionError("the event stream ended")


async def seen(base: str, node_id: int) -> None:
    """Once the explorer has read `node_id` from the registry (its page answers)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(base + "/events", timeout=aiohttp.ClientTimeout(120)) as stream,
    ):
        async with http.get(f"{base}/nodes/{node_id}") as r:
            if r.status == 200:
                return
        await next_update(stream, node_id)


async def registry_state(grid: Grid) -> tuple[list, list, list]:
    async with grid.client() as reg:
        await reg.ensure_twin()
        farms = await reg.list_farms()
        nodes = await reg.list_nodes(limit=1000)
        contracts = await reg.list_contracts()
    strip = [n.model_dump(exclude={"status", "last_heartbeat"}) for n in nodes]
    return farms, strip, contracts


async def test_pages_only_read(grid: Grid) -> None:
    client, node = await add_node(grid, city="Leuven")
    await client.close()
    await seen(grid.explorer.base, node.id)
    before = await registry_state(grid)
    async with aiohttp.ClientSession() as http:
        for path in [*ROUTES, f"/nodes/{node.id}", "/session", "/static/explorer.js"]:
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                async with http.request(method, grid.explorer.base + path, data=b"{}") as r:
                    assert r.status == 405, (method, path, r.status)
        async with http.get(grid.explorer.base + f"/nodes/{node.id}") as r:
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["X-Frame-Options"] == "DENY"
            assert "Leuven" in await r.text()
        async with http.get(grid.explorer.base + "/mine") as r:
            text = await r.text()
            assert r.status == 200 and "zos explorer serve --mine" in text  # holds no key
    assert await registry_state(grid) == before


async def test_bad_search_is_refused_naming_the_field(grid: Grid) -> None:
    async with aiohttp.ClientSession() as http:
        for query, field in (("free_memory=lots", "free_memory"), ("status=maybe", "status")):
            async with http.get(f"{grid.explorer.base}/nodes?{query}") as r:
                text = await r.text()
                assert r.status == 400 and f"{field}: " in text and 'id="filters"' in text
        async with http.get(f"{grid.explorer.base}/nodes/99999999") as r:
            assert r.status == 404 and "not on the grid" in await r.text()


async def test_events_announce_a_changed_node(grid: Grid) -> None:
    client, node = await add_node(grid)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(grid.explorer.base + "/events", timeout=aiohttp.ClientTimeout(60)) as r,
        ):
            assert r.headers["Content-Type"] == "text/event-stream"
            await client.heartbeat(node.id, Capacity(cru=1, mru=GiB))
            await next_update(r, node.id)
            async with http.get(f"{grid.explorer.base}/nodes/{node.id}") as page:
                html = await page.text()
        assert "<td>Memory</td><td>" in html and "<td>1G</td>" in html  # the used memory
    finally:
        await client.close()


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with no zos settings and no local grid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOS_")}
    env["ZOS_GRID_DIR"] = str(tmp_path / "no-local-grid")
    env["ZOS_KEY_FILE"] = str(tmp_path / "no-key.json")
    return env


async def test_mine_answers_only_its_own_browser(grid: Grid, tmp_path: Path) -> None:
    env = _bare_env(tmp_path)
    user = new_mnemonic()
    env["ZOS_MNEMONIC"] = user  # found as `zos ps` finds it, and so is the registry key:
    env["ZOS_REGISTRY_KEY"] = grid.registry_key
    mine = ExplorerProcess("--mine", "--nats", grid.url, "--every", "1", env=env)
    try:
        async with grid.client() as reg:
            await reg.ensure_twin()
            twin = await reg.twin_by_key(Identity.from_mnemonic(user).public_key)
        assert twin is not None and mine.who == f"yours, twin {twin.id}"  # the user's own
        base = mine.base
        # unsafe: the jar keeps cookies of an IP address (127.0.0.1), as browsers do
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(base + "/mine") as r:
                assert r.status == 403 and "zos explorer serve --mine" in await r.text()
            async with http.get(base + "/mine", headers={"Host": "evil.example:80"}) as r:
                assert r.status == 421
            async with http.get(base + "/session?token=guess", allow_redirects=False) as r:
                assert r.status == 403
            async with http.get(mine.url, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/mine"
                cookie = r.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            async with http.get(base + "/mine") as r:  # the session cookie now sent
                text = await r.text()
                assert r.status == 200 and "No deployments" in text
            async with http.post(base + "/mine") as r:
                assert r.status == 405
    finally:
        mine.stop()
    cli = [sys.executable, "-m", "zos.cli", "explorer", "serve"]
    wide = subprocess.run(
        [*cli, "--mine", "--listen", "0.0.0.0:0"], env=env, capture_output=True, text=True
    )
    assert wide.returncode == 1 and "loopback only" in wide.stderr
    env.pop("ZOS_MNEMONIC")
    keyless = subprocess.run([*cli, "--nats", grid.url], env=env, capture_output=True, text=True)
    assert keyless.returncode == 1 and "a key of its own" in keyless.stderr


def test_it_trusts_only_the_registry_key_it_was_given(grid: Grid, tmp_path: Path) -> None:
    """Told another registry key, the explorer refuses the grid's answers and does not
    start; told none (no option, no ZOS_REGISTRY_KEY, no local grid), it asks for one
    rather than learn it from the bus."""
    cli = [sys.executable, "-m", "zos.cli", "explorer", "serve", "--listen", "127.0.0.1:0"]
    env = _bare_env(tmp_path)
    key = ["--key-file", str(tmp_path / "explorer-key.json")]
    impostor = Identity.generate().public_hex
    for extra, say in (
        (["--registry-key", impostor], "not signed by its registry key"),
        ([], "no registry key for"),
    ):
        run = subprocess.run(
            [*cli, "--nats", grid.url, *key, *extra],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert run.returncode == 1 and say in run.stderr, run.stderr
        assert "explorer (" not in run.stdout  # it served nothing


async def _in_thread(driver: webdriver.Chrome, script: str, *args: object) -> object:
    return await asyncio.to_thread(driver.execute_async_script, script, *args)


async def test_node_going_down_turns_red_without_a_reload(
    grid: Grid, chrome: webdriver.Chrome
) -> None:
    client, node = await add_node(grid, city="Brugge", domain="gw.brugge.example")
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            await client.heartbeat(node.id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    beating = asyncio.create_task(beat())
    try:
        await asyncio.to_thread(chrome.get, f"{grid.explorer.base}/nodes?domain=brugge")
        await _in_thread(chrome, browser.WAIT_LIVE)
        row = f"#node-{node.id}"
        await _in_thread(chrome, browser.WAIT_STATUS, row, "up")
        chrome.execute_script("window.zosSamePage = true")
        browser.screenshot(chrome, "node-up")

        stop.set()  # the node's heartbeats stop
        await beating
        await _in_thread(chrome, browser.WAIT_STATUS, row, "down")
        assert chrome.execute_script("return window.zosSamePage === true")  # no reload
        colour = chrome.execute_script(
            f"return getComputedStyle(document.querySelector('{row} .status')).backgroundColor"
        )
        assert colour == "rgb(198, 40, 40)"  # red
        assert (
            chrome.execute_script(
                f"return getComputedStyle(document.querySelector('{row} td')).color"
            )
            == "rgb(198, 40, 40)"
        )
        browser.screenshot(chrome, "node-down")
    finally:
        stop.set()
        await beating
        await client.close()


def _first_paint(driver: webdriver.Chrome, url: str) -> dict[str, object]:
    driver.get(url)
    return browser.paint_timing(driver)


def _row(label: str, t: dict[str, object]) -> str:
    def ms(key: str) -> str:
        value = t.get(key)
        return f"{value:8.0f}" if isinstance(value, int | float) else "       -"

    return (
        f"  {label:<28} first paint {ms('first_contentful_paint')} ms  "
        f"response {ms('response_end')} ms  DOM ready {ms('dom_content_loaded')} ms  "
        f"{int(t.get('bytes') or 0) // 1024:5d} KiB"
    )


async def test_ten_thousand_nodes_first_paint(grid: Grid, chrome: webdriver.Chrome) -> None:
    """The node list's first paint with a few nodes, then with 10,000 more, beside the
    overview (printed, not asserted).

    The figure under test is the explorer's first paint, not registration throughput
    (benchmarks/bus_registry.py measures that): so the 10,000 nodes are not registered
    one transaction at a time (each from its own authenticated connection, some ten
    minutes here) but seeded into the registry's state as its service writes it after
    accepting their `register_twin` and `register_node` (`explorer_helpers.seed_nodes`:
    its own `Store`, values signed by the registry key, ids from its counters). The
    running registry takes them in through its bucket watch, as it does any value
    another copy of the service writes, and a fresh explorer reads them all through the
    real path: its own key, `list_nodes` pages of 1000, every answer signed and checked.
    A node registered afterwards through the registry gets the next id, as it would had
    the 10,000 been registered one by one.
    """
    base = grid.explorer.base
    async with grid.client() as reg:
        await reg.ensure_twin()
        few = len(await reg.list_nodes(limit=1000))
    baseline = await asyncio.to_thread(_first_paint, chrome, f"{base}/nodes")
    overview_few = await asyncio.to_thread(_first_paint, chrome, f"{base}/")

    # The explorer rests while the nodes are written; a fresh one, with the same key,
    # reads them all at its start.
    grid.explorer.stop()
    t = time.perf_counter()
    seeded = await seed_nodes(grid.url, grid.registry, grid.farm_id, MANY)
    total = few + MANY
    print(f"\nseeded {MANY} twins and nodes into the registry in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    key = str(grid.tmp / "explorer-key.json")
    args = grid.explorer_args("--key-file", key, "--every", "2")
    explorer = ExplorerProcess(*args, wait=300)
    print(f"a new explorer read all {total} nodes and listened {time.perf_counter() - t:.1f}s on")
    try:
        base = explorer.base
        many = await asyncio.to_thread(_first_paint, chrome, f"{base}/nodes")
        assert chrome.find_element("id", "match-count").text == str(total)
        assert len(chrome.find_elements("css selector", "#nodes tbody tr")) == 100
        browser.screenshot(chrome, "nodes-10000")
        sorted_many = await asyncio.to_thread(
            _first_paint, chrome, f"{base}/nodes?sort=free_memory&order=desc&status=down"
        )
        overview_many = await asyncio.to_thread(_first_paint, chrome, f"{base}/")
        browser.screenshot(chrome, "overview-10000")
    finally:
        explorer.stop()
    client, node = await add_node(grid)
    await client.close()
    assert node.id == seeded[-1] + 1  # the registry's counters went past the seeded ids
    print("first paint in Chromium (the same page, the same run):")
    print(_row(f"/nodes, {few} nodes", baseline))
    print(_row(f"/nodes, {total} nodes", many))
    print(_row(f"/nodes sorted+filtered, {total}", sorted_many))
    print(_row(f"/ overview, {few} nodes", overview_few))
    print(_row(f"/ overview, {total} nodes", overview_many))
