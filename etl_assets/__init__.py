"""Lakehouse ETL platform: nine landed sources -> bronze -> silver (+ quarantine) -> gold."""

from etl_assets.definitions import defs

__all__ = ["defs"]
