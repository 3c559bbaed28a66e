"""The benchmark's report format (no Spark, nothing timed): the last stdout line, the ratios, the
generated section of docs/benchmarks.md, and the Spark event-log profile parser."""

import json
import re

from etl_assets.bench import Run, bench_line, render, spark_profile, summarise, targets, write_doc

LINE_RE = re.compile(
    r"^bench: scale=1 dagster_s=\d+\.\d\d bare_s=\d+\.\d\d floor_s=\d+\.\d\d "
    r"dagster_over_bare=\d+\.\d\d scale10_over_scale1=\d+\.\d\d$"
)


def _run(mode, scale, wall, records=1000):
    detail = {"checks_s": wall * 0.1, "metadata_s": wall * 0.05, "steps": {"silver_orders": 3.0}} if mode == "dagster" else {}
    return Run(mode, scale, wall, 0, 300, 2000, 2300, (1.0, 1.0, 1.0), (2.0, 1.0, 1.0), records, detail)


def _results():
    return {
        1.0: {"dagster": [_run("dagster", 1.0, w) for w in (30.0, 32.0, 40.0)],
              "bare": [_run("bare", 1.0, w) for w in (20.0, 21.0, 25.0)],
              "floor": [_run("floor", 1.0, w) for w in (10.0, 11.0, 9.0)]},
        10.0: {"dagster": [_run("dagster", 10.0, 160.0, 10000)], "bare": [_run("bare", 10.0, 150.0, 10000)],
               "floor": [_run("floor", 10.0, 60.0, 10000)]},
    }


def test_summary_uses_medians_and_the_line_has_the_contract_format():
    summary = summarise(_results())
    one = summary[1.0]
    assert one["dagster"]["wall_s"] == 32.0 and one["bare"]["wall_s"] == 21.0 and one["floor"]["wall_s"] == 10.0
    assert one["dagster_over_bare"] == round(32 / 21, 2)
    assert one["checks_share"] == 0.1 and one["metadata_share"] == 0.05
    line = bench_line(summary)
    assert LINE_RE.match(line), line
    assert line.endswith("scale10_over_scale1=5.00")


def test_targets_table_marks_each_target_met_or_not():
    rows = {r.split(" | ")[0].lstrip("| "): r for r in targets(summarise(_results()))[2:]}
    # scale 1: 32/21 = 1.52 > 1.3; scale 10: 160/150 = 1.07 <= 1.15; 160/32 = 5 <= 6
    assert rows["dagster/bare at scale 1"].endswith("| 1.52 | <= 1.3 | **no** |")
    assert rows["dagster/bare at scale 10"].endswith("| 1.07 | <= 1.15 | yes |")
    assert rows["scale10/scale1 (dagster)"].endswith("| 5.00 | <= 6 | yes |")
    assert rows["peak memory at scale 10 (GB, dagster: driver + JVM)"].endswith("| 2.25 | <= 6 | yes |")
    assert rows["checks + metadata share at scale 1 (%)"].endswith("| 15.00 | <= 20 | yes |")
    only_one = {r.split(" | ")[0].lstrip("| "): r for r in targets(summarise({1.0: _results()[1.0]}))[2:]}
    assert only_one["scale10/scale1 (dagster)"].endswith("| n/a | <= 6 | n/a |")
    # a run of scale 10 alone has no scale10/scale1 ratio
    assert bench_line(summarise({10.0: _results()[10.0]})).endswith("scale10_over_scale1=n/a")


def test_doc_section_is_replaced_and_the_hand_written_part_kept(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nhand-written method\n\n## Optimisations\n\n| change |\n")
    results = _results()
    summary = summarise(results)
    mach = {"cores": 2, "memory_gb": 24, "cpu": "x", "os": "Linux", "java": "17", "python": "3.11",
            "spark": "4", "dagster": "1.13"}
    write_doc(out, render(results, summary, mach, "now", bench_line(summary)))
    write_doc(out, render(results, summary, mach, "later", bench_line(summary)))
    text = out.read_text()
    assert text.count("<!-- bench:begin -->") == 1 and "Started later" in text and "Started now" not in text
    assert "hand-written method" in text and "## Optimisations" in text
    assert "| 10 | dagster | 1 | 160.00 |" in text


def test_spark_profile_counts_jobs_per_dagster_step(tmp_path):
    log = tmp_path / "events" / "app-1"
    log.parent.mkdir()
    events = [
        {"Event": "SparkListenerJobStart", "Job ID": 0, "Submission Time": 1_000},
        {"Event": "SparkListenerJobStart", "Job ID": 1, "Submission Time": 5_000},
        {"Event": "SparkListenerStageCompleted", "Stage Info": {
            "Completion Time": 5_500, "Number of Tasks": 4, "Accumulables": [
                {"Name": "internal.metrics.executorRunTime", "Value": 2000},
                {"Name": "internal.metrics.input.bytesRead", "Value": 2 * 1024 * 1024}]}},
    ]
    log.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    p = spark_profile(log.parent, {"bronze__orders": (0.5, 2.0), "silver_orders": (4.0, 6.0)})
    assert p["jobs"] == 2 and p["stages"] == 1 and p["tasks"] == 4 and p["input_mb"] == 2.0
    assert p["spark_jobs_by_step"] == {"bronze__orders": (1, 0), "silver_orders": (1, 2.0)}
