"""Shared fixtures: one SparkSession per test process, temporary landing/lake folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ETL_SPARK_LOG_LEVEL", "ERROR")
os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)

from etl_assets.resources import SparkResource  # noqa: E402
from etl_assets.transforms.silver import Pii  # noqa: E402

TEST_PII = Pii(salt="test-salt", key="0123456789abcdef")  # AES-128 key for tests


@pytest.fixture(scope="session")
def spark():
    # Two shuffle partitions: the unit-test frames are tiny.
    session = SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g").get_session()
    yield session


@pytest.fixture(scope="session")
def pii() -> Pii:
    return TEST_PII
