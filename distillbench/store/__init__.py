"""Results persistence: SQLite rows (``database``) and support-set artifacts (``artifacts``)."""

from distillbench.store.database import DEFAULT_STORE, STORE_ENV, ResultStore, RunRecord, default_store_path

__all__ = ["DEFAULT_STORE", "STORE_ENV", "ResultStore", "RunRecord", "default_store_path"]
