"""Labels files as other systems write them: Parquet columns of any type, read without a service.

A warehouse export writes numeric transaction ids as integers, and an integer column with a
missing cell comes back from Parquet as floats (``123.0``): each id must still be sent as
written. A column of lists or structs is no id at all: a one-line error naming the file,
the column and the row, exit 2, never a traceback and never ids made of ``repr``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.cli import main
from training.labels import LabelsImportError, label_bodies, read_labels_file

_IDS = st.lists(st.one_of(st.none(), st.integers(0, 2**63 - 1)), min_size=1, max_size=30).filter(
    lambda ids: any(i is not None for i in ids)
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ids=_IDS, merchants_as_ints=st.booleans())
def test_integer_ids_of_a_parquet_file_are_sent_as_written(
    tmp_path: Path, ids: list[int | None], merchants_as_ints: bool
) -> None:
    path = tmp_path / "labels.parquet"
    merchants = pa.array([7] * len(ids)) if merchants_as_ints else pa.array(["m-1"] * len(ids))
    pq.write_table(
        pa.table(
            {
                "merchant_id": merchants,
                "transaction_id": pa.array(ids, pa.int64()),
                "label": pa.array([1 if i is not None and i % 2 else 0 for i in ids], pa.int8()),
                "reported_at": pa.array([None] * len(ids), pa.timestamp("s", tz="UTC")),
            }
        ),
        path,
    )
    bodies = label_bodies(read_labels_file(path))
    assert [b.get("transaction_id") for b in bodies] == [None if i is None else str(i) for i in ids]
    assert {b["merchant_id"] for b in bodies} == {"7" if merchants_as_ints else "m-1"}
    assert {b["label"] for b in bodies} <= {"fraud", "legit"}


@pytest.mark.parametrize(
    ("column", "values", "row"),
    [
        ("transaction_id", pa.array([["t-1"], ["t-2"]]), 1),
        ("merchant_id", pa.array([{"id": "m"}, {"id": "n"}]), 1),
        ("transaction_id", pa.array([b"t-1", b"\xff\xfe"], pa.binary()), 2),
        ("label", pa.array([1.5, 0.0]), 1),
        ("label", pa.array([True, False]), 1),
    ],
)
def test_a_column_that_holds_no_text_is_one_line_naming_file_column_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str, values: pa.Array, row: int
) -> None:
    table = {
        "merchant_id": pa.array(["m", "m"]),
        "transaction_id": pa.array(["t-1", "t-2"]),
        "label": pa.array(["fraud", "legit"]),
        "reported_at": pa.array([None, None], pa.string()),
    } | {column: values}
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(LabelsImportError) as raised:
        label_bodies(read_labels_file(path))
    message = str(raised.value)
    assert str(path) in message and f"column {column}" in message and f"row {row}:" in message
    code = main(["labels", "import", str(path), "--url", "http://127.0.0.1:9", "--api-key", "k"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("riskscore labels import: ") and f"column {column}" in err
