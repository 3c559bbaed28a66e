"""The jars Spark loads beside its own: Delta Lake and S3A (hadoop-aws with a slim AWS SDK v2).

Pinned here with their SHA-1, fetched once from Maven Central into a cache outside the work tree
(``$ETL_JARS_DIR``, default ``~/.cache/etl_assets/jars``) by ``python -m etl_assets.jars``, which
``make install`` runs. Spark gets their concrete paths (``spark.jars``) and resolves nothing at
run time.

The set: ``delta-spark_4.2_2.13`` 4.4.0 (Delta's build for Spark 4.2) with ``delta-storage``;
``hadoop-aws`` 3.5.0 (the Hadoop that pyspark 4.2.0 ships) with the AWS SDK v2 modules it uses
instead of the 600 MB SDK ``bundle``; minus what pyspark already ships (netty, httpclient,
commons-codec, slf4j, commons-logging).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

MAVEN = "https://repo.maven.apache.org/maven2"

#: (group:artifact:version, sha1 of the jar)
JARS: tuple[tuple[str, str], ...] = (
    ("io.delta:delta-spark_4.2_2.13:4.4.0", "c2ab26421b8de44a2161b5e0b7da7954049f1ca1"),
    ("io.delta:delta-storage:4.4.0", "a068e489ce20d7f79bc4ca2d3392f12adbb69ddd"),
    ("org.apache.hadoop:hadoop-aws:3.5.0", "9e594525d264c0db653c7f68da98b245f7d61ea5"),
    ("org.reactivestreams:reactive-streams:1.0.4", "3864a1320d97d7b045f729a326e1e077661f31b7"),
    ("org.wildfly.openssl:wildfly-openssl:2.2.5.Final", "78a86a04b5ddbfb75d6f3a2812cc724cde4a26f1"),
    ("software.amazon.awssdk:annotations:2.35.4", "0ee2f050aafed2b3b9393472a4fb35eb91c74555"),
    ("software.amazon.awssdk:apache-client:2.35.4", "406c25140a3a32ccd49ba3d752096a9fe2787ba3"),
    ("software.amazon.awssdk:arns:2.35.4", "d915a3104773b44533bd6f618a8c7b28c2e9d8a0"),
    ("software.amazon.awssdk:auth:2.35.4", "3a5f28f575d616813cad10a8db817984ed57d777"),
    ("software.amazon.awssdk:aws-core:2.35.4", "2f288fa2bac08dde3e9c74950bc9a7fe04913371"),
    ("software.amazon.awssdk:aws-query-protocol:2.35.4", "a4908689bc1285e192da926bd1d646d09d1d7def"),
    ("software.amazon.awssdk:aws-xml-protocol:2.35.4", "3a8c83d91ba7b41c29a2d84826e293ec4fa51386"),
    ("software.amazon.awssdk:checksums-spi:2.35.4", "36eba96eccfc87a5de204f72ad215ac362d28755"),
    ("software.amazon.awssdk:checksums:2.35.4", "75d7256f1fa208224a3b23e2100941c0416f38a5"),
    ("software.amazon.awssdk:crt-core:2.35.4", "eba7c2ddaef9938a072b4a6e58fd95ce8a7e0805"),
    ("software.amazon.awssdk:endpoints-spi:2.35.4", "5fd0e9e47a6fdf05ea5906ac38e0bce1268ab9f0"),
    ("software.amazon.awssdk:http-auth-aws-eventstream:2.35.4", "2590b41716ea3fd938fe614321da9c5367f6868c"),
    ("software.amazon.awssdk:http-auth-aws:2.35.4", "d149f075bc7b5631754cbb1adfcd2c77aa932a1b"),
    ("software.amazon.awssdk:http-auth-spi:2.35.4", "8b280ce879d02d3da134e61e303d8e6c5eacc988"),
    ("software.amazon.awssdk:http-auth:2.35.4", "ffa68c5e63d0f8ee9a5788029267cc450b5617c4"),
    ("software.amazon.awssdk:http-client-spi:2.35.4", "3995875e3b834d39d708b661142949078babc34a"),
    ("software.amazon.awssdk:identity-spi:2.35.4", "75e3168376548e375560e4595ba6a768458c87c1"),
    ("software.amazon.awssdk:json-utils:2.35.4", "ca561bcb836814901bb8eda4089e451dcbf18024"),
    ("software.amazon.awssdk:metrics-spi:2.35.4", "a2065eca2ade2adb2a937d4e671b52704cffbdc5"),
    ("software.amazon.awssdk:netty-nio-client:2.35.4", "90acbbb695727eac973267f70d72bd95244d1d60"),
    ("software.amazon.awssdk:profiles:2.35.4", "f9342cdd5f95a0d2f85bbedc3d25c3fc230beb51"),
    ("software.amazon.awssdk:protocol-core:2.35.4", "54d8a6bdbe86852311b80d2a5b782995d6d7d0b7"),
    ("software.amazon.awssdk:regions:2.35.4", "83ab2f31cd9932dc274aa418cd4cbd761cbca3c8"),
    ("software.amazon.awssdk:retries-spi:2.35.4", "22196f00e2560aa9c74b6a74f62b8bd51a4b94b6"),
    ("software.amazon.awssdk:retries:2.35.4", "02117c396b14d7db6c4b88d5c32b8380640a7bd0"),
    ("software.amazon.awssdk:s3-transfer-manager:2.35.4", "6e4f2e5072fbc8551940eeed15220ddd11c684b2"),
    ("software.amazon.awssdk:s3:2.35.4", "cc6cd77617d73cf9084d021e2693863bede49a4d"),
    ("software.amazon.awssdk:sdk-core:2.35.4", "7de70ccba4959d32e7a2ec549d312378413d36c9"),
    ("software.amazon.awssdk:sts:2.35.4", "11042ac0ab4837496892379735e03873ff39a88d"),
    ("software.amazon.awssdk:third-party-jackson-core:2.35.4", "980758655bc742236478439d753c634858846d1c"),
    ("software.amazon.awssdk:url-connection-client:2.35.4", "854438cb1cf451f331d488a352bce3ce330ca0de"),
    ("software.amazon.awssdk:utils-lite:2.35.4", "148d6b8801d9696c4cffff306dfdd3b96781af24"),
    ("software.amazon.awssdk:utils:2.35.4", "8bf086b3b751b058fa62e7f0398d94db7295ebbe"),
    ("software.amazon.eventstream:eventstream:1.0.1", "6ff8649dffc5190366ada897ba8525a836297784"),
    ("software.amazon.s3.analyticsaccelerator:analyticsaccelerator-s3:1.3.1", "6c9bd0f6c440c9a78e82d272f5f0252d942419f6"),
)

#: The oldest EMR runtime we support, emr-spark-8.0.0 (Spark 4.0.2, Delta 4.0.0): its Delta jars, for
#: the second environment that runs the entry point on that Spark (``make emr-runtime-env``,
#: ``etl_assets_tests/test_emr_runtime.py``). No hadoop-aws: that environment proves a local lake.
EMR_RUNTIME_JARS: tuple[tuple[str, str], ...] = (
    ("io.delta:delta-spark_2.13:4.0.0", "60c55e6243f4543771602ea5733767a4d8a1af2f"),
    ("io.delta:delta-storage:4.0.0", "4526f775e104c5b8db3deea7cc825bcfddea25d1"),
)

#: ``$ETL_JARS_SET`` picks the set that ``jar_paths()`` returns and ``fetch()`` downloads.
JAR_SETS = {"main": JARS, "emr-runtime": EMR_RUNTIME_JARS}


def jar_set() -> tuple[tuple[str, str], ...]:
    name = os.environ.get("ETL_JARS_SET") or "main"
    if name not in JAR_SETS:
        raise ValueError(f"ETL_JARS_SET={name!r}: not one of {', '.join(JAR_SETS)}")
    return JAR_SETS[name]


class JarsMissing(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("ETL_JARS_DIR") or Path.home() / ".cache" / "etl_assets" / "jars")


def _file(coord: str) -> tuple[str, str]:
    group, artifact, version = coord.split(":")
    name = f"{artifact}-{version}.jar"
    return name, f"{MAVEN}/{group.replace('.', '/')}/{artifact}/{version}/{name}"


def jar_paths() -> list[str]:
    """The cached jars' paths; a clear error naming the fix when any is missing."""
    folder = cache_dir()
    paths = [folder / _file(coord)[0] for coord, _ in jar_set()]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise JarsMissing(f"{len(missing)} Spark jar(s) missing in {folder} (ETL_JARS_DIR), e.g. {missing[0]}: "
                          "run `make install` (python -m etl_assets.jars)")
    return [str(p) for p in paths]


def fetch(log=print) -> int:
    """Download the jars that are not cached yet, checking each SHA-1; returns bytes downloaded."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for coord, sha1 in jar_set():
        name, url = _file(coord)
        dest = folder / name
        if dest.is_file() and hashlib.sha1(dest.read_bytes()).hexdigest() == sha1:
            continue
        with urllib.request.urlopen(url, timeout=120) as r:  # noqa: S310 - Maven Central
            data = r.read()
        got = hashlib.sha1(data).hexdigest()
        if got != sha1:
            raise RuntimeError(f"{url}: SHA-1 {got}, expected {sha1}")
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, dest)
        total += len(data)
        log(f"jars: {name} ({len(data) / 1e6:.1f} MB)")
    return total


def main() -> int:
    try:
        n = fetch()
    except OSError as e:
        print(f"jars: cannot download from Maven Central: {e}", file=sys.stderr)
        return 1
    size = sum(Path(p).stat().st_size for p in jar_paths())
    print(f"jars: {len(jar_set())} in {cache_dir()} ({size / 1e6:.1f} MB; {n / 1e6:.1f} MB downloaded now)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
