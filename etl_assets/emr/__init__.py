"""Spark on EMR Serverless through Dagster Pipes (``spark.engine: emr``).

- ``entrypoint.py``: the Spark entry point shipped in the package; runs the selected assets'
  own code on the EMR driver's session and reports them through ``dagster_pipes``.
- ``launch.py``: the job parameters, the ``PipesEMRServerlessClient``, the runner resources
  and ``emr_assets`` (the per-table Spark assets replaced by one subsettable multi-asset).
"""
