"""S3 faults between the platform and S3: throttling (503 SlowDown, 429), 5xx errors, timeouts,
connection resets and bodies cut off mid-stream, while listing and while downloading.

A fault-injecting proxy (``fault_proxy.FaultProxy``, a threaded HTTP server on 127.0.0.1) sits
in front of moto's S3 server; the platform's S3 client (``LandingS3Resource``: boto3 via
dagster-aws, standard retry mode, ``ETL_S3_MAX_ATTEMPTS``) talks to the proxy. Test data is put
into moto directly, never through the proxy.

- retries are bounded (every request carries ``amz-sdk-request: attempt=N; max=M``; a fault
  that never stops gives up after exactly M attempts with a clear error) and back off (a
  ``x-amz-retry-after`` is honoured: the next attempt waits at least that long);
- the arrival sensor and ``landing_ingest`` runs under a fault schedule ingest every landed
  object exactly once (bronze rows per object = the object's rows, ingest log = landed keys);
- an object that cannot be downloaded fails its dataset's run with an error naming it, is not
  marked ingested, and the rerun ingests it once.

Timing: the client's read timeout is generous (``READ_TIMEOUT_S``) so that only the timeouts the
proxy provokes on purpose (silent for ``TIMEOUT_DELAY_S``) time out; the retry chains asserted
below are then decided by the fault rules alone, not by how loaded the machine is. Backoff is
asserted as a lower bound on the wait, never an upper one.

The ``test_flow_*`` tests are steps of one scenario (``scenario``: run once each, in order, on
demand), so each passes or fails on its own step under ``-k``, ``--lf`` or any order.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import botocore.exceptions
import pytest
from dagster import AssetKey, Definitions, build_sensor_context, in_process_executor, instance_for_test

from etl_assets.definitions import build_definitions
from etl_assets.ingest import IngestLog
from etl_assets.lake import Lake
from etl_assets.registry import dataset
from etl_assets.resources import SparkResource
from etl_assets.s3 import LandingS3Resource, S3LandingStore
from etl_assets.sample_data import generate
from etl_assets.sensors import landing_arrival_sensor
from etl_assets.settings import Settings
from etl_assets.storage import LandingError
from etl_assets_tests.conftest import TEST_PII
from etl_assets_tests.fault_proxy import FaultProxy, Rule
from etl_assets_tests.helpers import Scenario
from etl_assets_tests.moto_server import moto_s3  # noqa: F401  (fixture)

MAX_ATTEMPTS = 5  # the platform's default ETL_S3_MAX_ATTEMPTS
# Generous: an answer moto is merely slow to give (2 loaded cores shared with Spark) must never
# time out, or the retry chains below would change. A timeout is only ever provoked on purpose,
# by the proxy staying silent for TIMEOUT_DELAY_S, well past the client's read timeout.
READ_TIMEOUT_S = 8.0
TIMEOUT_DELAY_S = READ_TIMEOUT_S + 4
BUCKET, PREFIX = "landing-faults", "landing"
DAY1, DAY2 = "2026-11-01", "2026-11-02"
FLOW = tuple(dataset(n) for n in ("customers", "orders", "order_events"))  # CSV, Parquet, JSON Lines
FLOW_PREFIXES = tuple(d.landing_prefix + "/" for d in FLOW)


@pytest.fixture(scope="module")
def proxy(moto_s3):  # noqa: F811
    p = FaultProxy(moto_s3.endpoint, seed=20261101).start()
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL", p.endpoint)  # the platform talks to the proxy
    mp.setenv("ETL_S3_MAX_ATTEMPTS", str(MAX_ATTEMPTS))
    mp.setenv("ETL_S3_READ_TIMEOUT_S", str(READ_TIMEOUT_S))
    mp.setenv("ETL_S3_CONNECT_TIMEOUT_S", "5")
    try:
        yield p
    finally:
        mp.undo()
        p.stop()


@pytest.fixture
def faults(proxy):
    proxy.clear()
    proxy.reset_records()
    yield proxy
    proxy.clear()


def _attempt_chains(records) -> list[list]:
    """Records grouped into retry chains: a chain starts at attempt 1."""
    chains = []
    for r in sorted(records, key=lambda r: r.at):
        if r.attempt == 1 or not chains:
            chains.append([r])
        else:
            chains[-1].append(r)
    return chains


# ---------------------------------------------------------------------------------------------
# the S3 client alone (no Spark)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_bucket(moto_s3):  # noqa: F811
    client = moto_s3.client()
    client.create_bucket(Bucket="faults-unit")
    for name in ("a", "b", "c"):
        body = b"account_id,last_modified_date\n" + f"{name}-1,2026-11-01\n".encode() * 2000
        client.put_object(Bucket="faults-unit", Key=f"p/crm/accounts/dt={DAY1}/{name}.csv", Body=body)
    return "s3://faults-unit/p"


def test_client_retry_configuration(proxy):
    client = LandingS3Resource.from_env().get_client()
    assert client.meta.config.retries == {"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"}
    assert client.meta.config.read_timeout == READ_TIMEOUT_S


def test_throttled_listing_backs_off_and_succeeds(faults, small_bucket, tmp_path):
    faults.add(
        Rule("slowdown", listing=True, times=2, retry_after_ms=300),  # S3's throttling answer
        Rule("throttle", listing=True, times=1),  # 429
        Rule("internal", listing=True, times=1),  # 500
    )
    store = S3LandingStore(small_bucket, staging_dir=str(tmp_path))
    files = store.list_files()
    assert [f.key.rsplit("/", 1)[1] for f in files] == ["a.csv", "b.csv", "c.csv"]
    (chain,) = _attempt_chains(faults.records)
    assert [(r.attempt, r.fault) for r in chain] == [(1, "slowdown"), (2, "slowdown"), (3, "throttle"),
                                                      (4, "internal"), (5, None)]
    assert all(r.max_attempts == MAX_ATTEMPTS for r in chain)
    # backoff: after each SlowDown carrying x-amz-retry-after: 300 the client waited >= 0.3 s
    # (measured from the arrival of the throttled request, a bound a slow machine cannot break)
    for prev, nxt in zip(chain[:2], chain[1:3]):
        assert nxt.at - prev.at >= 0.3, (prev, nxt)


@pytest.mark.parametrize("fault", ["slowdown", "throttle", "internal", "unavailable"])
def test_persistent_listing_fault_gives_up_after_max_attempts(faults, small_bucket, tmp_path, fault):
    faults.add(Rule(fault, listing=True))
    store = S3LandingStore(small_bucket, staging_dir=str(tmp_path))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        store.list_files()
    assert err.value.response["ResponseMetadata"]["RetryAttempts"] == MAX_ATTEMPTS - 1
    assert [r.attempt for r in faults.records] == list(range(1, MAX_ATTEMPTS + 1))  # bounded
    assert {r.fault for r in faults.records} == {fault}


def test_timeouts_and_resets_are_retried(faults, small_bucket, tmp_path):
    faults.add(Rule("timeout", listing=True, times=1, delay_s=TIMEOUT_DELAY_S),
               Rule("reset", listing=True, times=1))
    store = S3LandingStore(small_bucket, staging_dir=str(tmp_path))
    assert len(store.list_files()) == 3
    assert [(r.attempt, r.fault) for r in faults.records] == [(1, "timeout"), (2, "reset"), (3, None)]
    assert all(r.max_attempts == MAX_ATTEMPTS for r in faults.records)


def test_persistent_timeout_gives_up_bounded(faults, small_bucket, tmp_path, monkeypatch):
    """A persistent timeout gives up after the configured attempts with botocore's timeout error
    (2 attempts here: each costs the whole read timeout)."""
    monkeypatch.setenv("ETL_S3_MAX_ATTEMPTS", "2")
    faults.add(Rule("timeout", listing=True, delay_s=TIMEOUT_DELAY_S))
    store = S3LandingStore(small_bucket, staging_dir=str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        store.list_files()
    took = time.monotonic() - t0
    assert [(r.attempt, r.max_attempts, r.fault) for r in faults.records] == [(1, 2, "timeout"), (2, 2, "timeout")]
    assert took >= 2 * READ_TIMEOUT_S  # each attempt waited the read timeout before giving up


def test_downloads_survive_faults_and_cut_off_bodies(faults, small_bucket, tmp_path, moto_s3):  # noqa: F811
    store = S3LandingStore(small_bucket, staging_dir=str(tmp_path))
    files = {f.key.rsplit("/", 1)[1]: f for f in store.list_files()}
    faults.reset_records()
    faults.add(
        Rule("slowdown", method="HEAD", path_contains="a.csv", times=1),
        Rule("truncate", method="GET", path_contains="a.csv", times=2),  # body cut off mid-stream
        Rule("throttle", method="GET", path_contains="b.csv", times=1),
        Rule("reset", method="GET", path_contains="b.csv", times=1),
        Rule("timeout", method="GET", path_contains="c.csv", times=1, delay_s=TIMEOUT_DELAY_S),
    )
    store.prefetch(files.values())
    expected = {n: moto_s3.client().get_object(Bucket="faults-unit", Key=f"p/{f.key}")["Body"].read()
                for n, f in files.items()}
    for name, f in files.items():
        assert Path(store.local_path(f)).read_bytes() == expected[name], name  # complete and exact
    fired = collections.Counter((r.path.rsplit("/", 1)[1], r.fault) for r in faults.faults())
    assert fired == {("a.csv", "slowdown"): 1, ("a.csv", "truncate"): 2, ("b.csv", "throttle"): 1,
                     ("b.csv", "reset"): 1, ("c.csv", "timeout"): 1}
    # no partial file is left in the staging folder
    assert not list(tmp_path.rglob("*.part"))


def test_persistent_download_fault_names_the_object_and_is_bounded(faults, small_bucket, tmp_path):
    store = S3LandingStore(small_bucket, staging_dir=str(tmp_path))
    b = next(f for f in store.list_files() if f.key.endswith("b.csv"))
    faults.reset_records()
    faults.add(Rule("internal", path_contains="b.csv"))
    with pytest.raises(LandingError, match=r"s3://faults-unit/p/crm/accounts/dt=2026-11-01/b\.csv: cannot stage"):
        store.local_path(b)
    attempts = [r.attempt for r in faults.records]
    assert attempts == list(range(1, MAX_ATTEMPTS + 1)), attempts
    assert not list(tmp_path.rglob("b.csv*"))


# ---------------------------------------------------------------------------------------------
# the arrival sensor and landing_ingest under faults: nothing lost, nothing twice
# ---------------------------------------------------------------------------------------------
def _keys(root: Path, day: str) -> list[str]:
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [k for k in keys if f"/dt={day}/" in k and k.startswith(FLOW_PREFIXES)]


class Flow:
    def __init__(self, root, totals, lake: Lake, defs: Definitions, instance, client):
        self.root, self.totals, self.lake, self.defs, self.instance, self.client = root, totals, lake, defs, instance, client
        self.cursor = None
        self.platform = defs.resources["platform"]
        self.proxy: FaultProxy | None = None

    def upload(self, keys, rename=None) -> list[str]:
        out = []
        for k in keys:
            dest = rename(k) if rename else k
            self.client.upload_file(str(self.root / k), BUCKET, f"{PREFIX}/{dest}")
            out.append(dest)
        return out

    def tick(self, tries: int = 4):
        """One sensor evaluation; a tick that fails (faults beyond the retries) is evaluated again
        from the same cursor, as Dagster does on the next interval."""
        for i in range(tries):
            ctx = build_sensor_context(instance=self.instance, cursor=self.cursor, resources={"platform": self.platform})
            try:
                return landing_arrival_sensor(ctx)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if i == tries - 1:
                    raise

    def run(self, req, raise_on_error=False):
        job = self.defs.resolve_job_def("landing_ingest")
        return job.execute_in_process(run_config=req.run_config, instance=self.instance,
                                      asset_selection=req.asset_selection, tags=req.tags,
                                      raise_on_error=raise_on_error)

    def per_source(self, name: str) -> collections.Counter:
        if not self.lake.exists("bronze", name):
            return collections.Counter()
        t = self.lake.arrow("bronze", name, columns=["_source_file"])
        return collections.Counter(t.column("_source_file").to_pylist())


@pytest.fixture(scope="module")
def flow(proxy, moto_s3, spark, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("faults_landing")
    totals = generate(root, days=2, seed=3, scale=0.01)
    client = moto_s3.client()  # straight to moto: test data never goes through the faults
    client.create_bucket(Bucket=BUCKET)
    lake_dir = tmp_path_factory.mktemp("faults_lake")
    settings = Settings(env="local", landing_uri=f"s3://{BUCKET}/{PREFIX}", lake_uri=str(lake_dir),
                        pii_salt=TEST_PII.salt, pii_key=TEST_PII.key)
    prod = build_definitions(settings)
    defs = Definitions(
        assets=prod.assets, jobs=prod.jobs, sensors=prod.sensors, executor=in_process_executor,
        resources={"platform": prod.resources["platform"],
                   "spark": SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g")},
    )
    # the boto3 download path (ETL_S3_READ_MODE=stage), whose bounded retries this module asserts;
    # in the default s3a mode Spark's reads retry by S3A's own settings (fs.s3a.retry.*)
    with pytest.MonkeyPatch.context() as mp, \
            instance_for_test(temp_dir=str(tmp_path_factory.mktemp("faults_dagster_home"))) as instance:
        mp.setenv("ETL_S3_READ_MODE", "stage")
        flow = Flow(root, totals, Lake(str(lake_dir)), defs, instance, client)
        flow.proxy = proxy
        yield flow


@pytest.fixture(scope="module")
def scenario(flow):
    return Scenario(flow, after_step=lambda flow: flow.proxy.clear(), steps=[
        _step_1_arrivals_under_faults_are_ingested_exactly_once,
        _step_2_undownloadable_object_fails_by_name_then_is_ingested_once,
    ])


def _schedule() -> list[Rule]:
    """Every fault at least once while listing and while downloading, then random faults."""
    return [
        Rule("slowdown", listing=True, times=1, retry_after_ms=200),
        Rule("throttle", listing=True, times=1),
        Rule("timeout", listing=True, times=1, delay_s=TIMEOUT_DELAY_S),
        Rule("internal", method="HEAD", times=2),
        Rule("truncate", method="GET", listing=False, times=2),
        Rule("reset", method="GET", listing=False, times=1),
        Rule("unavailable", method="GET", listing=False, times=1),
        Rule("slowdown", method="GET", listing=False, times=1),
        *[Rule(f, probability=0.03) for f in ("slowdown", "throttle", "internal", "reset", "truncate")],
    ]


def _step_1_arrivals_under_faults_are_ingested_exactly_once(flow):
    proxy = flow.proxy
    proxy.clear()
    proxy.reset_records()
    proxy.add(*_schedule())
    t0 = time.monotonic()
    landed = []
    for day in (DAY1, DAY2):
        landed += flow.upload(_keys(flow.root, day))
        result = flow.tick()
        (req,) = result.run_requests
        runs = [flow.run(req)]
        while not runs[-1].success and len(runs) < 3:  # a run that met faults beyond the retries
            runs.append(flow.run(req))
        assert runs[-1].success
        flow.cursor = result.cursor
    fired = collections.Counter(r.fault for r in proxy.faults())
    listing_faults = {r.fault for r in proxy.faults() if "list-type=" in r.query}
    download_faults = {r.fault for r in proxy.faults() if "list-type=" not in r.query}
    assert {"slowdown", "throttle", "timeout"} <= listing_faults, fired
    assert {"internal", "truncate", "reset", "unavailable", "slowdown"} <= download_faults, fired
    assert all(r.attempt is not None and r.attempt <= MAX_ATTEMPTS for r in proxy.records)
    # every delivered record exactly once, per object
    for ds in FLOW:
        per_file = flow.per_source(ds.name)
        assert sum(per_file.values()) == flow.totals[ds.name], ds.name
        expected_uris = {f"s3://{BUCKET}/{PREFIX}/{k}" for k in landed if k.startswith(ds.landing_prefix + "/")}
        nonempty = {u for u in expected_uris if per_file[u]}
        assert set(per_file) == nonempty, ds.name
        m = IngestLog.load(flow.lake, ds.name)
        assert m.bronze_version == flow.lake.version("bronze", ds.name)
        assert set(m.entries) == {k for k in landed if k.startswith(ds.landing_prefix + "/")}
    # nothing new: the next tick asks for nothing, and repeating a request adds no row
    proxy.clear()
    assert not flow.tick().run_requests
    before = {ds.name: flow.per_source(ds.name) for ds in FLOW}
    assert flow.run(req).success
    assert {ds.name: flow.per_source(ds.name) for ds in FLOW} == before
    print(f"\n[faults] 2 days under {sum(fired.values())} injected faults ({dict(fired)}): "
          f"{time.monotonic() - t0:.1f}s")


def _step_2_undownloadable_object_fails_by_name_then_is_ingested_once(flow):
    proxy = flow.proxy
    proxy.clear()
    proxy.reset_records()
    src = next(k for k in _keys(flow.root, DAY1) if k.startswith("warehouse/customers/"))
    late_key = "warehouse/customers/dt=2026-11-03/late delivery.csv"
    flow.upload([src], rename=lambda k: late_key)
    result = flow.tick()
    (req,) = result.run_requests
    assert req.asset_selection == [AssetKey(["bronze", "customers"])]
    before = flow.per_source("customers")
    proxy.reset_records()
    proxy.add(Rule("internal", path_contains="late delivery.csv"))
    run = flow.run(req)
    assert not run.success
    (failure,) = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.event_specific_data.error.to_string()
    assert f"s3://{BUCKET}/{PREFIX}/{late_key}: cannot stage object" in text
    hits = [r for r in proxy.records if "late delivery.csv" in r.path]
    assert [r.attempt for r in hits] == list(range(1, MAX_ATTEMPTS + 1))  # bounded, then the error
    assert flow.per_source("customers") == before  # the previous bronze version stays
    assert late_key not in IngestLog.load(flow.lake, "customers").entries  # not marked ingested
    # S3 recovers: the same request ingests it, once
    proxy.clear()
    assert flow.run(req).success
    after = flow.per_source("customers")
    late_uri = f"s3://{BUCKET}/{PREFIX}/{late_key}"
    assert after[late_uri] == before[f"s3://{BUCKET}/{PREFIX}/{src}"]
    assert after - collections.Counter({late_uri: after[late_uri]}) == before
    assert flow.run(req).success
    assert flow.per_source("customers") == after  # a repeat adds nothing
    flow.cursor = result.cursor


def test_flow_1_arrivals_under_faults_are_ingested_exactly_once(scenario):
    scenario.check(1)


def test_flow_2_undownloadable_object_fails_by_name_then_is_ingested_once(scenario):
    scenario.check(2)
