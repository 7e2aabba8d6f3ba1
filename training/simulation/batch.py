"""A batch of simulated log rows, held as one numpy array per column.

Generators fill the columns they know and leave the rest to their defaults; batches are
concatenated, sorted once, and only then turned into the log's DataFrame. Internally
times are Unix seconds, the merchant is an index into the merchant table, the amount is
USD (priced in the row's currency at the end), and tri-state flags are -1/0/1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

MISSING: Final = -1  # tri-state flags and KYC levels: not reported

# Column: (dtype, default for rows a generator leaves unset).
SCHEMA: Final[dict[str, tuple[type | str, object]]] = {
    "ts": (np.int64, None),
    "merchant": (np.int64, None),
    "amount_usd": (np.float64, None),
    "amount_style": (np.int8, 0),
    "currency": (object, None),
    "payment_method_type": (object, None),
    "payment_method_provider": (object, None),
    "card_bin": (object, None),
    "card_last4": (object, None),
    "card_fingerprint": (object, None),
    "card_issuer_country": (object, None),
    "card_funding": (object, None),
    "payment_method_account": (object, None),
    "customer_id": (object, None),
    "customer_email": (object, None),
    "customer_created_at": (np.int64, None),
    "customer_kyc_level": (np.int8, MISSING),
    "customer_age_verified": (np.int8, MISSING),
    "customer_country": (object, None),
    "device_id": (object, None),
    "device_ip": (object, None),
    "device_ip_country": (object, None),
    "context_first_deposit": (np.int8, MISSING),
    "context_bonus_code": (object, None),
    "context_subscription_kind": (object, None),
    "context_subscription_trial": (np.int8, MISSING),
    "context_three_ds": (object, None),
    "label": (np.int8, 0),
    "label_delay": (np.int64, None),
    "fraud_pattern": (object, ""),
}
# Columns with no sensible default: every generator sets them.
REQUIRED: Final[frozenset[str]] = frozenset(
    {"ts", "merchant", "amount_usd", "customer_created_at", "label_delay"}
)


@dataclass(slots=True)
class Batch:
    """Generated rows as named columns, in the log's schema."""

    columns: dict[str, np.ndarray]

    @classmethod
    def of(cls, n: int, **values: object) -> Batch:
        """Rows with the given columns (arrays of length ``n`` or scalars), defaults elsewhere."""
        unknown = set(values) - set(SCHEMA)
        if unknown:
            raise KeyError(f"not a simulator column: {sorted(unknown)}")
        missing = REQUIRED - set(values)
        if missing:
            raise KeyError(f"a batch needs {sorted(missing)}")
        columns: dict[str, np.ndarray] = {}
        for name, (dtype, default) in SCHEMA.items():
            value = values.get(name, default)
            if isinstance(value, np.ndarray):
                if len(value) != n:
                    raise ValueError(f"{name}: {len(value)} values for {n} rows")
                columns[name] = value.astype(dtype, copy=False)
            else:
                column = np.empty(n, dtype=dtype)
                column[:] = value
                columns[name] = column
        return cls(columns)

    def __len__(self) -> int:
        return len(self.columns["ts"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self.columns[name] = value

    def take(self, rows: np.ndarray) -> Batch:
        """The batch's rows at ``rows``."""
        return Batch({name: column[rows] for name, column in self.columns.items()})

    @classmethod
    def concat(cls, batches: list[Batch]) -> Batch:
        """The batches' rows one after another."""
        return cls({name: np.concatenate([b.columns[name] for b in batches]) for name in SCHEMA})
