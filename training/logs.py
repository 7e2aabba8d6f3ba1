"""Reading transaction logs (Parquet or CSV) the way every command needs them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_log(path: Path | str) -> pd.DataFrame:
    """A transaction log; CSV columns are read as text so ids like ``00123`` keep their zeros."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no transaction log at {path}")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
