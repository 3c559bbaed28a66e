"""Spark loads Delta Lake and S3A from the jars ``make install`` cached (``etl_assets/jars.py``),
and maps the standard AWS settings onto S3A (``s3.s3a_spark_conf``).

The tables are read back without Spark, with the ``deltalake`` package, as any Delta reader
would: on a folder and on S3 (moto's server on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

from etl_assets.jars import JARS, jar_paths
from etl_assets.s3 import s3a_spark_conf
from etl_assets_tests.moto_server import moto_s3  # noqa: F401  (fixture)
from etl_assets_tests.servers import clean_env

REPO = Path(__file__).resolve().parents[1]


def test_every_pinned_jar_is_cached_with_its_checksum():
    paths = jar_paths()
    assert len(paths) == len(JARS) == len(set(paths))
    for path, (coord, sha1) in zip(paths, JARS):
        assert Path(path).name.startswith(coord.split(":")[1] + "-"), (path, coord)
        assert hashlib.sha1(Path(path).read_bytes()).hexdigest() == sha1, path
    names = " ".join(Path(p).name for p in paths)
    assert "delta-spark_4.2_2.13-4.4.0.jar" in names and "hadoop-aws-3.5.0.jar" in names
    assert "bundle-" not in names  # the slim SDK modules, not the 600 MB bundle


def test_the_session_writes_delta_tables_that_deltalake_reads(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.createDataFrame([(1, "a"), (2, "b")], "id int, v string")
    df.write.format("delta").mode("overwrite").save(path)
    df.limit(1).write.format("delta").mode("append").save(path)
    assert spark.read.format("delta").load(path).count() == 3
    table = DeltaTable(path)
    assert table.version() == 1
    assert table.protocol().min_reader_version == 1  # readable by every Delta reader
    assert sorted(r["id"] for r in table.to_pyarrow_table().to_pylist()) == [1, 1, 2]
    assert [h["version"] for h in table.history()] == [1, 0]  # two commits, newest first


def test_s3a_settings_follow_the_standard_aws_variables():
    conf = s3a_spark_conf({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"})
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    # the S3-specific endpoint wins, as in boto3; on AWS itself no endpoint is set
    conf = s3a_spark_conf({"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "https://b",
                           "AWS_DEFAULT_REGION": "us-east-2"})
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "https://b"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "us-east-2"
    aws = s3a_spark_conf({})
    assert "spark.hadoop.fs.s3a.endpoint" not in aws and "spark.hadoop.fs.s3a.endpoint.region" not in aws
    assert aws["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("DefaultCredentialsProvider")


WRITE_TO_S3 = r"""
import json, sys
from etl_assets.resources import SparkResource
spark = SparkResource(master="local[1]", shuffle_partitions=1, driver_memory="1g").get_session()
df = spark.createDataFrame([(1, "a"), (2, "b")], "id int, v string")
for uri in sys.argv[1:]:
    df.write.format("delta").mode("overwrite").save(uri)
print(json.dumps([spark.read.format("delta").load(u).count() for u in sys.argv[1:]]))
"""


def test_delta_on_s3_through_the_standard_aws_environment(moto_s3):  # noqa: F811
    """A new process with nothing but the standard AWS variables (endpoint, keys, region) writes
    Delta tables to ``s3a://`` and ``s3://`` URIs; deltalake reads them from the bucket."""
    moto_s3.client().create_bucket(Bucket="lake")
    env = clean_env({"AWS_ENDPOINT_URL": moto_s3.endpoint})
    proc = subprocess.run([sys.executable, "-c", WRITE_TO_S3, "s3a://lake/a", "s3://lake/b"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [2, 2]
    options = {"AWS_ENDPOINT_URL": moto_s3.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": env["AWS_REGION"],
               "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
               "AWS_SESSION_TOKEN": env["AWS_SESSION_TOKEN"]}
    for key in ("a", "b"):
        table = DeltaTable(f"s3://lake/{key}", storage_options=options)
        assert sorted(r["v"] for r in table.to_pyarrow_table().to_pylist()) == ["a", "b"]
    keys = [o["Key"] for o in moto_s3.client().list_objects_v2(Bucket="lake")["Contents"]]
    assert "a/_delta_log/00000000000000000000.json" in keys and "b/_delta_log/00000000000000000000.json" in keys
