"""The explorer on a local grid (`zos grid up`, one node agent), in headless Chromium:
`grid up` starts it (its own key, the grid's registry key pinned); the overview, a node
search with a filter, a node's page and a farm show what the registry holds; a twin's
own explorer (`zos explorer serve --mine`, with the twin's key, on loopback) shows its
deployment: each workload's state, the machine's address and URL, and its output,
hostile text shown as text. A screenshot of each page goes to `.test-artifacts/explorer/`.

Beside the node agent, the test registers two nodes of a second farm through the
registry client and keeps them beating, so that filters have something to leave out.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import explorer_browser as browser
import pytest
from explorer_helpers import ExplorerProcess
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "grid"))

from gridhelpers import GRID_MARKS, emergency_sweep, env_for, quiet, web_rootfs, zos_cli

from zos.client import DeploymentInfo, GridClient
from zos.client.placement import size
from zos.grid import procs
from zos.grid.local import down, up
from zos.grid.state import GridState
from zos.identity import Identity, load_key_file, write_key_file
from zos.registry import Capacity, Location, Node, PublicConfig, RegistryClient

pytestmark = [*GRID_MARKS, pytest.mark.timeout(600)]

T = TypeVar("T")
GiB, MiB = 1 << 30, 1 << 20
HOSTILE = "<b>bold</b><script>window.zosPwned=1</script>"
MANIFEST = f"""\
name: shop
node: NODE
disks:
  - {{name: data, size: 32M}}
machines:
  - name: web
    image: rootfs
    memory: 256M
    entrypoint: /bin/sh -c "echo booted; echo '{HOSTILE}'; exec httpd -f -v -p 8080 -h /www"
    mounts: [{{disk: data, mountpoint: /data}}]
    ports: [8080]
"""


class Beating:
    """Registry-only nodes of a second farm, heartbeating from a thread of their own."""

    def __init__(self, state: GridState) -> None:
        self.state = state
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[RegistryClient] = []
        self.nodes: list[Node] = []
        self._task: asyncio.Future[None] | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    async def _add(self) -> None:
        farmer = await client_of(self.state).connect()
        self.clients.append(farmer)
        await farmer.register_twin()
        farm = await farmer.create_farm("farm-extra")
        token = await farmer.farm_join_token(farm.id)
        for cap, used, city, domain in (
            (Capacity(cru=16, mru=32 * GiB, sru=1024 * GiB), Capacity(), "Ghent", "gw.ex.org"),
            (Capacity(cru=2, mru=512 * MiB, sru=50 * GiB), Capacity(mru=256 * MiB), "Cairo", ""),
        ):
            client = await client_of(self.state).connect()
            self.clients.append(client)
            await client.register_twin()
            node = await client.register_node(
                farm.id,
                token,
                cap,
                location=Location(city=city, country="XX"),
                public_config=PublicConfig(domain=domain),
            )
            await client.heartbeat(node.id, used)
            self.nodes.append(node)

        async def beat() -> None:
            while True:
                await asyncio.sleep(2)
                for client, node, used in zip(
                    self.clients[1:], self.nodes, (Capacity(), Capacity(mru=256 * MiB)), strict=True
                ):
                    await client.heartbeat(node.id, used)

        self._task = asyncio.ensure_future(beat())

    def start(self) -> Beating:
        self.run(self._add())
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._task is not None:
                self._task.cancel()
            for c in self.clients:
                await c.close()

        self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Setup:
    state: GridState
    user_key: Path
    deployment: DeploymentInfo
    mine: ExplorerProcess
    extra: Beating


async def _deploy(state: GridState, user: Identity, app: Path) -> DeploymentInfo:
    grid = await GridClient.connect(state_dir=state.state_dir, identity=user)
    try:
        return await grid.deploy(app)
    finally:
        await grid.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("explorer-grid")
    state_dir = tmp / "state"
    extra = mine = None
    try:
        state, started = up(state_dir, nodes=1, say=quiet)
        assert started
        extra = Beating(state).start()
        web_rootfs(busybox_rootfs, tmp / "rootfs", "<h1>shop</h1>\n")
        # On the node agent (the extra nodes have more memory but no agent).
        (tmp / "app.yaml").write_text(MANIFEST.replace("NODE", str(state.nodes[0].node_id)))
        user = Identity.generate()
        user_key = tmp / "user-key.json"
        write_key_file(user_key, user)
        deployment = asyncio.run(_deploy(state, user, tmp / "app.yaml"))
        mine = ExplorerProcess(
            "--mine", "--state-dir", str(state_dir), "--key-file", str(user_key), "--every", "2"
        )
        yield Setup(state, user_key, deployment, mine, extra)
    finally:
        if mine is not None:
            mine.stop()
        if extra is not None:
            extra.stop()
        try:
            down(state_dir, say=quiet)
        finally:
            emergency_sweep(state_dir)


def client_of(state: GridState) -> RegistryClient:
    """A registry client of a fresh key, trusting the grid's registry key."""
    key = bytes.fromhex(state.registry_key)
    return RegistryClient(state.nats_url, Identity.generate(), registry_key=key)


def registry(state: GridState, read: Callable[[RegistryClient], Coroutine[Any, Any, T]]) -> T:
    """What the registry answers `read`, asked by a twin of its own."""

    async def go() -> T:
        async with client_of(state) as reg:
            await reg.ensure_twin()
            return await read(reg)

    return asyncio.run(go())


def until_shown(driver: webdriver.Chrome, expected: Callable[[], T], shown: Callable[[], T]) -> T:
    """What the page shows, once it is what the registry holds: compared after each swap of
    the page's live region (the explorer reads the registry every few seconds)."""
    for _ in range(8):
        want, got = expected(), shown()
        if want == got:
            return got
        driver.execute_async_script(browser.WAIT_REFRESH)
    assert shown() == expected()
    return shown()


def text_of(driver: webdriver.Chrome, css: str) -> str:
    return driver.execute_script("return document.querySelector(arguments[0]).innerText", css)


def cells(driver: webdriver.Chrome, rows: str) -> list[list[str]]:
    """The text of each cell of the rows `rows` selects, read at one instant (the live
    region may be swapped between two reads of separate elements)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(r => [...r.cells].map(c => c.innerText.trim()))",
        rows,
    )


ROWS_OF_NODES = """
return [...document.querySelectorAll("#nodes tbody tr")].map(r => [
  r.dataset.node, r.dataset.status, r.querySelector("td:nth-child(5) .amount").innerText]);
"""


def test_grid_up_starts_the_explorer(setup: Setup) -> None:
    state = setup.state
    [proc] = [p for p in state.procs if p.name == "explorer"]
    assert procs.alive(proc) and state.explorer_url.startswith("http://127.0.0.1:")
    out = zos_cli(env_for(Path(state.state_dir), setup.user_key), "grid", "status")
    assert f"explorer: {state.explorer_url}" in out.stdout
    # It trusts the registry key grid up made, given as the hub is given it.
    assert proc.argv[proc.argv.index("--registry-key") + 1] == state.registry_key
    # Its own twin, registered like any user's, with its own key (made at first start).
    own = load_key_file(Path(state.state_dir) / "explorer-key.json")
    twin = registry(state, lambda r: r.twin_by_key(own.public_key))
    assert twin is not None and own.public_key != load_key_file(setup.user_key).public_key


STATS = ["farms", "nodes", "up", "down", "cores", "memory", "ssd", "contracts"]


def test_overview_shows_the_registry_numbers(setup: Setup, chrome: webdriver.Chrome) -> None:
    chrome.get(setup.state.explorer_url + "/")
    chrome.execute_async_script(browser.WAIT_LIVE)

    async def numbers(reg: RegistryClient) -> dict[str, str]:
        farms, nodes = await reg.list_farms(), await reg.list_nodes(limit=1000)
        contracts = await reg.list_contracts(state="created", type="node")
        up_nodes = [n for n in nodes if n.status == "up"]
        return {
            "farms": str(len(farms)),
            "nodes": str(len(nodes)),
            "up": str(len(up_nodes)),
            "down": str(len(nodes) - len(up_nodes)),
            "cores": str(sum(n.capacity.cru for n in nodes)),
            "memory": size(sum(n.capacity.mru for n in nodes)),
            "ssd": size(sum(n.capacity.sru for n in nodes)),
            "contracts": str(len(contracts)),
        }

    shown = until_shown(
        chrome,
        lambda: registry(setup.state, numbers),
        lambda: {k: text_of(chrome, f"#stat-{k}") for k in STATS},
    )
    assert shown["farms"] == "2" and shown["nodes"] == "3" and shown["contracts"] == "1"
    assert chrome.find_elements(By.CSS_SELECTOR, "svg.chart")  # the two charts
    browser.screenshot(chrome, "grid-overview")


def test_node_search_with_a_filter(setup: Setup, chrome: webdriver.Chrome) -> None:
    chrome.get(setup.state.explorer_url + "/nodes")
    form = chrome.find_element(By.ID, "filters")
    form.find_element(By.NAME, "free_memory").send_keys("1G")
    Select(form.find_element(By.NAME, "status")).select_by_value("up")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The click starts a navigation; the new page's URL carries the filters.
    WebDriverWait(chrome, 120).until(
        lambda d: "free_memory=1G" in d.current_url and "status=up" in d.current_url
    )
    chrome.execute_async_script(browser.WAIT_LIVE)

    def expected() -> list[tuple[str, str, str]]:
        nodes = registry(setup.state, lambda r: r.list_nodes(status="up", free_mru=GiB, limit=1000))
        return [(str(n.id), "up", f"{size(n.free.mru)} / {size(n.capacity.mru)}") for n in nodes]

    def shown() -> list[tuple[str, str, str]]:
        return [tuple(r) for r in chrome.execute_script(ROWS_OF_NODES)]  # type: ignore[misc]

    rows = until_shown(chrome, expected, shown)
    agent, big = str(setup.state.nodes[0].node_id), str(setup.extra.nodes[0].id)
    assert {r[0] for r in rows} == {agent, big}  # the extra node with 256M free is left out
    assert text_of(chrome, "#match-count") == "2"
    browser.screenshot(chrome, "grid-nodes-filtered")


def test_node_page(setup: Setup, chrome: webdriver.Chrome) -> None:
    node_id = setup.state.nodes[0].node_id
    chrome.get(f"{setup.state.explorer_url}/nodes/{node_id}")
    chrome.execute_async_script(browser.WAIT_LIVE)

    def expected() -> list[list[str]]:
        n = registry(setup.state, lambda r: r.get_node(node_id))
        free = n.free
        return [
            ["Cores", str(n.capacity.cru), str(n.used.cru), str(free.cru)],
            ["Memory", size(n.capacity.mru), size(n.used.mru), size(free.mru)],
            ["SSD", size(n.capacity.sru), size(n.used.sru), size(free.sru)],
            ["HDD", size(n.capacity.hru), size(n.used.hru), size(free.hru)],
        ]

    def shown() -> list[list[str]]:
        return [row[:4] for row in cells(chrome, "#capacity tbody tr")]

    until_shown(chrome, expected, shown)
    facts = text_of(chrome, "#node-facts")
    assert "up" in facts and "Active contracts\n1" in facts and "Up for" in facts
    assert chrome.find_element(By.CSS_SELECTOR, "#node-facts .status").text == "up"
    browser.screenshot(chrome, "grid-node")
    chrome.find_element(By.LINK_TEXT, setup.state.farm_name).click()  # its farm
    assert chrome.current_url.endswith(f"/farms/{setup.state.farm_id}")
    assert chrome.find_elements(By.ID, f"node-{node_id}")
    browser.screenshot(chrome, "grid-farm")


def test_signed_in_twin_sees_its_deployments(setup: Setup, chrome: webdriver.Chrome) -> None:
    chrome.get(setup.mine.url)  # signs this browser in, then shows /mine
    assert chrome.current_url == setup.mine.base + "/mine"
    dep = setup.deployment
    section = f"#deployment-{dep.contract_id}"
    assert "shop" in text_of(chrome, f"{section} h2")
    states = {row[0]: row[2] for row in cells(chrome, f"{section} table.workloads tbody tr")}
    assert states == {w.name: w.state for w in dep.workloads} and set(states.values()) == {"ok"}
    [machine] = dep.machines
    [row] = cells(chrome, f"{section} table.machines tbody tr")
    assert row[:3] == ["web", machine.ip, machine.network] and machine.urls[0] in row[3]
    browser.screenshot(chrome, "grid-mine")

    logs = chrome.execute_script(
        "return document.querySelector(arguments[0] + ' table.machines a[href*=logs]').href",
        section,
    )
    chrome.get(logs)

    def output() -> str:
        return text_of(chrome, "#logs")

    for _ in range(10):  # the page reads the machine's output again at every poll
        if "booted" in output():
            break
        chrome.execute_async_script(browser.WAIT_REFRESH)
    assert "booted" in output() and HOSTILE in output()  # shown as text
    assert chrome.execute_script("return window.zosPwned === undefined")
    browser.screenshot(chrome, "grid-logs")
