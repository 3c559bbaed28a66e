"""The Dagster UI, tested as an engineer uses it: ``make dev`` and a real browser.

One module-scoped platform: a copy of the session's shared run (``conftest.lake_run``: its
``DAGSTER_HOME`` with the finished ``etl_all`` run, and its lake), and ``make dev`` (webserver and
daemon) on a free port of 127.0.0.1 over that instance. The platform's own sensors are
stopped (``ETL_SENSOR_DEFAULT_STATUS=stopped``) so that nothing but the test launches runs.

- ``make dev`` listens on the loopback interface only (every listening socket of its process
  group, read from /proc) and its daemon is running;
- headless Chromium (Debian's ``chromium`` + ``chromium-driver``, see ``.ci/install-chromium``)
  driven by Selenium: the asset graph shows every asset; ``gold/customer_360`` shows its column
  schema, its column lineage and asset lineage, its check results and metadata plots; a gold
  asset is materialized from the UI and the run succeeds.

Screenshots go to ``.state/screenshots/`` (ignored by git). ``make asset-graph`` runs the graph
test with ``ETL_UPDATE_ASSET_GRAPH=1``, which also copies the picture to ``docs/asset_graph.png``
(the README's picture); the suite itself never writes into the work tree.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / ".state" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LAUNCHED_ASSET = ("gold", "revenue_by_geography")

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):  # never a silent skip
    raise RuntimeError(f"{CHROMIUM} or {CHROMEDRIVER} is missing: `make install` installs them (.ci/install-chromium)")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.status, r.read()


def graphql(base: str, query: str) -> dict:
    req = urllib.request.Request(
        f"{base}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())["data"]


def wait_for(pred, timeout: float, what: str, interval: float = 1.0, log: Path | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log and log.exists() else ""
    raise TimeoutError(f"{what}: not after {timeout:.0f}s (last error: {last!r})\n{tail}")


def group_pids(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def _addr(hex_addr: str) -> str:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        host = ".".join(str(b) for b in raw[::-1])
    else:  # IPv6: four little-endian 32-bit words
        words = [raw[i: i + 4][::-1] for i in range(0, 16, 4)]
        b = b"".join(words)
        if b[:12] == b"\x00" * 10 + b"\xff\xff":
            host = "::ffff:" + ".".join(str(x) for x in b[12:])
        else:
            host = ":".join(b[i: i + 2].hex() for i in range(0, 16, 2))
    return f"{host}:{int(port, 16)}"


def listening_sockets(pids: list[int]) -> list[str]:
    """host:port of every TCP socket in LISTEN state owned by ``pids`` (from /proc, no psutil)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                out.append(_addr(f[1]))
    return out


def is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0]
    return host.startswith("127.") or host in ("::1", "0000:0000:0000:0000:0000:0000:0000:0001") or \
        host.startswith("::ffff:127.")


# -- the platform ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory, lake_run):
    assert lake_run["result"].success, "etl_all failed before the UI test"
    root = tmp_path_factory.mktemp("ui")
    # the UI launches a run that writes to the lake: a copy of the shared run's instance and lake
    home, lake = root / "dagster_home", root / "lake"
    shutil.copytree(lake_run["home"], home)
    shutil.copytree(lake_run["lake"], lake)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "DAGSTER_", "SPARK_", "PYSPARK_"))}
    env.update(
        PORT=str(port),
        DAGSTER_HOME=str(home),
        ETL_ENV="local",
        ETL_LANDING_URI=str(lake_run["landing"]),
        ETL_LAKE_URI=str(lake),
        ETL_PII_SALT=lake_run["salt"],
        ETL_PII_KEY=lake_run["key"],
        ETL_SENSOR_DEFAULT_STATUS="stopped",  # nothing but this test launches runs
        ETL_SPARK_LOG_LEVEL="ERROR",
        ETL_SPARK_SHUFFLE_PARTITIONS="2",
        ETL_ALERT_LOG=str(root / "alerts.jsonl"),
        PYTHONPATH=str(REPO),
    )
    log = root / "make_dev.log"
    # `make dev` itself (the Makefile's recipe), without re-running the install step
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", "install", "dev",  # -o: the install step is CI's, not ours
             f"BIN={Path(os.sys.executable).parent}"],
            cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{base}/server_info")[0] == 200, 240, "dagster webserver", log=log)
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
        wait_for(
            lambda: all(e["loadStatus"] == "LOADED" for e in graphql(base, query)["workspaceOrError"]["locationEntries"]),
            240, "code location loaded", log=log,
        )
        yield {"base": base, "port": port, "proc": proc, "home": home, "lake": lake, "log": log, "root": root}
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    import signal

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_pids(proc.pid):
                proc.poll()
                return
            time.sleep(0.3)


# -- make dev: loopback only, daemon running ---------------------------------------------------


def test_make_dev_listens_on_loopback_only(platform):
    pids = group_pids(platform["proc"].pid)
    assert len(pids) >= 3, pids  # make, dagster dev, webserver, daemon, code server
    sockets = listening_sockets(pids)
    assert f"127.0.0.1:{platform['port']}" in sockets, sockets
    exposed = [s for s in sockets if not is_loopback(s)]
    assert not exposed, f"make dev listens beyond loopback: {exposed}"
    assert http_get(f"{platform['base']}/server_info")[0] == 200
    # the daemon runs (sensors and automation are evaluated), on the same instance
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"

    def healthy() -> set[str]:
        statuses = graphql(platform["base"], query)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return {d["daemonType"] for d in statuses if d["healthy"]}

    wait_for(lambda: {"SENSOR", "ASSET", "QUEUED_RUN_COORDINATOR"} <= healthy(), 120, "daemons healthy")


# -- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(platform):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="etl-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-extensions", "--window-size=1600,1000", f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class UI:
    def __init__(self, driver, base: str):
        self.d, self.base = driver, base

    def open(self, path: str):
        self.d.get(self.base + path)
        self.dismiss_modal()

    def dismiss_modal(self):
        """The "Join the Dagster community" dialog of a fresh browser profile."""
        from selenium.webdriver.common.by import By

        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            skip = [b for b in self.d.find_elements(By.XPATH, "//button[normalize-space()='Skip']") if b.is_displayed()]
            if skip:
                skip[0].click()
                return
            time.sleep(0.3)

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.TAG_NAME, "body").text

    def wait_text(self, *needles: str, timeout: float = 60) -> str:
        return wait_for(lambda: all(n in self.text() for n in needles) and self.text(), timeout,
                        f"page showing {needles} at {self.d.current_url}", interval=0.5)

    def click(self, xpath: str, timeout: float = 30):
        from selenium.webdriver.common.by import By

        def find():
            els = [e for e in self.d.find_elements(By.XPATH, xpath) if e.is_displayed()]
            return els[-1] if els else None

        el = wait_for(find, timeout, f"clickable {xpath}", interval=0.5)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", el)
        return el

    def scroll_to(self, xpath: str, timeout: float = 30):
        from selenium.webdriver.common.by import By

        el = wait_for(lambda: next(iter(self.d.find_elements(By.XPATH, xpath)), None), timeout, xpath, interval=0.5)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'start'});", el)
        time.sleep(0.5)
        return el

    def shot(self, name: str) -> Path:
        from selenium.webdriver.common.by import By

        for b in self.d.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            if b.is_displayed():
                b.click()
                time.sleep(0.5)
        path = SHOTS / f"{name}.png"
        self.d.save_screenshot(str(path))
        return path


def all_asset_keys() -> list[tuple[str, ...]]:
    from etl_assets import defs

    return [tuple(k.path) for k in defs.get_repository_def().asset_graph.get_all_asset_keys()]


def _shown_as(name: str, label: str) -> bool:
    """The graph shortens long names at low zoom: "product_per…_daily"."""
    if "…" not in label:
        return label == name
    head, tail = label.split("…", 1)
    return name.startswith(head) and name.endswith(tail) and len(name) >= len(head) + len(tail)


def test_asset_graph_shows_every_asset(platform, browser):
    from selenium.webdriver.common.by import By

    ui = UI(browser, platform["base"])
    ui.open("/server_info")
    # vertical layers, groups side by side, all groups expanded: the graph opens zoomed to fit
    # the window's width, and in a wide window that is every node
    browser.execute_script("window.localStorage.setItem('asset-graph-direction', JSON.stringify('vertical'))")
    browser.set_window_size(2400, 1300)
    groups = ",".join(f"global@global:{g}" for g in ("raw", "bronze", "silver", "gold"))
    ui.open(f"/asset-groups?expanded={urllib.parse.quote(groups)}")
    expected = collections.Counter(k[-1] for k in all_asset_keys())

    def labels():
        return [e.text for e in browser.find_elements(By.CSS_SELECTOR, "[class*='AssetNode_assetName']") if e.text]

    try:
        shown = wait_for(lambda: (lambda ls: ls if len(ls) >= sum(expected.values()) else None)(labels()), 90,
                         "every asset node drawn", interval=1)
    except TimeoutError:
        ui.shot("asset_graph_failed")
        raise AssertionError(f"graph shows {len(labels())} of {sum(expected.values())} assets: {labels()}") from None
    time.sleep(1)  # let the last node statuses paint for the picture
    remaining = list(labels())
    assert len(remaining) == sum(expected.values()), (len(remaining), remaining)
    for name, n in sorted(expected.items(), key=lambda x: -len(x[0])):  # longest names first
        for _ in range(n):
            match = next((lbl for lbl in remaining if _shown_as(name, lbl)), None)
            assert match is not None, f"asset {name!r} not in the graph: {remaining}"
            remaining.remove(match)
    assert not remaining and shown
    for group in ("raw", "bronze", "silver", "gold"):
        assert group in ui.text()
    ui.shot("asset_graph_page")
    path = graph_picture(browser, SHOTS / "asset_graph.png")
    assert path.stat().st_size > 10_000  # a picture of the graph, not an empty page
    if os.environ.get("ETL_UPDATE_ASSET_GRAPH") == "1":  # `make asset-graph`: the README's picture
        shutil.copy(path, REPO / "docs" / "asset_graph.png")
    browser.set_window_size(1600, 1000)


def graph_picture(driver, path: Path, pad: int = 16) -> Path:
    """The drawn graph only (the union of its nodes' boxes), rendered at twice the resolution
    through Chrome's DevTools protocol so that the node labels stay legible."""
    import base64

    box = driver.execute_script(
        """
        const rs = [...document.querySelectorAll('[data-svg-viewport] foreignObject')]
          .map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
        return {x: Math.min(...rs.map(r => r.left)), y: Math.min(...rs.map(r => r.top)),
                r: Math.max(...rs.map(r => r.right)), b: Math.max(...rs.map(r => r.bottom))};
        """
    )
    clip = {"x": max(box["x"] - pad, 0), "y": max(box["y"] - pad, 0), "scale": 2}
    clip.update(width=box["r"] - clip["x"] + pad, height=box["b"] - clip["y"] + pad)
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "clip": clip})["data"]
    path.write_bytes(base64.b64decode(data))
    return path


def test_customer_360_page(platform, browser):
    from etl_assets import defs

    ui = UI(browser, platform["base"])
    ui.open("/assets/gold/customer_360")
    # the column schema (dagster/column_schema): every published column with its type
    columns = ["customer_id", "email_hash", "revenue_usd", "ltv_tier", "open_pipeline_usd"]
    ui.wait_text("Columns", *columns, "decimal(18,2)")
    ui.scroll_to("//*[normalize-space(text())='Columns']")
    ui.shot("customer_360_columns")

    # column lineage (derived from the Spark plan), in the asset's metadata
    ui.wait_text("column_lineage", "upstream columns", "gold/fact_orders.amount_usd, gold/fact_orders.is_revenue",
                 "silver/opportunities.amount_usd")
    row = ui.scroll_to("//tr[.//*[normalize-space(text())='column_lineage']]")
    assert "revenue_usd" in row.text and "gold/fact_orders.amount_usd" in row.text
    ui.shot("customer_360_column_lineage")

    # metadata plots (rows, bytes, duration, rows/s over time)
    from selenium.webdriver.common.by import By

    ui.click("//*[normalize-space(text())='Plots']")
    ui.wait_text("bytes_written", "dagster/row_count", "rows_per_s", "duration_s")
    wait_for(lambda: len(browser.find_elements(By.TAG_NAME, "canvas")) >= 4, 30, "metadata plots drawn")
    ui.scroll_to("//*[normalize-space(text())='bytes_written']")
    ui.shot("customer_360_plots")

    # asset lineage: the upstream tables in the Lineage tab's graph
    ui.click("//a[contains(@href, 'view=lineage')]")
    ui.wait_text("fact_orders", "customers", "behavior", "accounts", "opportunities", timeout=60)
    ui.shot("customer_360_lineage")

    # check results: the asset has checks, and the page lists them with their outcome
    node = defs.get_repository_def().asset_graph.get(__import__("dagster").AssetKey(["gold", "customer_360"]))
    check_names = sorted(k.name for k in node.check_keys)
    assert check_names, "gold/customer_360 has no asset check"
    ui.click("//a[contains(@href, 'view=checks')]")
    ui.wait_text(f"Checks ({len(check_names)})", *check_names)
    assert "Succeeded" in ui.text() or "Passed" in ui.text()
    ui.shot("customer_360_checks")


def test_materialize_gold_asset_from_the_ui(platform, browser):
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    from dagster._core.instance.ref import InstanceRef

    ui = UI(browser, platform["base"])
    layer, name = LAUNCHED_ASSET
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(platform["home"]))) as instance:
        before = {r.run_id for r in instance.get_runs()}
        mats_before = len(instance.fetch_materializations(AssetKey([layer, name]), limit=10).records)
        ui.open(f"/assets/{layer}/{name}")
        ui.wait_text(name, "Materialize")
        ui.click("//button[normalize-space()='Materialize']")
        run = wait_for(lambda: next(iter(r for r in instance.get_runs() if r.run_id not in before), None), 60,
                       "a run launched from the UI")
        ui.open(f"/runs/{run.run_id}")
        ui.wait_text(run.run_id[:8], timeout=60)
        # the daemon dequeues the run, a run worker materializes the asset
        status = wait_for(
            lambda: (lambda r: r.status if r.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                                        DagsterRunStatus.CANCELED) else None)(
                instance.get_run_by_id(run.run_id)),
            300, f"run {run.run_id} to finish", interval=2, log=platform["log"],
        )
        ui.open(f"/runs/{run.run_id}")
        ui.wait_text("Success", timeout=60) if status == DagsterRunStatus.SUCCESS else None
        ui.shot("materialize_from_ui_run")
        assert status == DagsterRunStatus.SUCCESS, ui.text()[-3000:]
        assert instance.get_run_by_id(run.run_id).asset_selection == {AssetKey([layer, name])}
        assert len(instance.fetch_materializations(AssetKey([layer, name]), limit=10).records) == mats_before + 1
