"""Results persistence: SQLite rows (``database``) and support-set artifacts (``artifacts``).

The store's reader is the only code that opens the SQLite file or an artifact; it decodes rows
into :class:`distillbench.records.RunRecord`.
"""

from distillbench.records import RunRecord
from distillbench.store.database import DEFAULT_STORE, STORE_ENV, ResultStore, default_store_path

__all__ = ["DEFAULT_STORE", "STORE_ENV", "ResultStore", "RunRecord", "default_store_path"]
