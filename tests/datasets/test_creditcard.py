"""The creditcard.csv reader (bad input is an error naming the line; duplicates counted) and its generator."""

from __future__ import annotations

import numpy as np
import pytest

from tfos_lib.datasets import creditcard
from tfos_lib.datasets.creditcard import CreditCardDataError


def _write(path, table=None, lines=None):
    table = creditcard.generate_transactions(rows=40, frauds=4, duplicates=2, seed=1) if table is None else table
    creditcard.write_creditcard_csv(str(path), table)
    if lines is not None:
        text = path.read_text().splitlines()
        path.write_text("\n".join(lines(text)) + "\n")
    return str(path)


def test_reads_the_kaggle_format_and_drops_duplicates(spark, tmp_path):
    path = _write(tmp_path / "creditcard.csv")
    rows, counts = creditcard.read_transactions(spark, path)
    assert counts == {"rows_read": 40, "duplicates_dropped": 2, "rows": 38, "frauds": 4}
    assert rows.columns == ["row", *creditcard.COLUMNS]
    assert dict(rows.dtypes)["Class"] == "int" and dict(rows.dtypes)["V28"] == "double"
    assert rows.select("row").distinct().count() == 38


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: [t[0].replace(',"V7"', "")] + [",".join(x.split(",")[:7] + x.split(",")[8:]) for x in t[1:]],
         "missing ['V7']"),
        (lambda t: [t[0] + ',"Extra"'] + [x + ",1" for x in t[1:]], "extra ['Extra']"),
        (lambda t: [t[0].replace('"V1","V2"', '"V2","V1"')] + t[1:], "out of order"),
        (lambda t: t[:3] + [t[3].replace(",", ",abc,", 1).rsplit(",", 1)[0]] + t[4:], "line 4: is not 31 numbers"),
        (lambda t: t[:5] + [t[5].split(",", 2)[0] + ",NaN," + t[5].split(",", 2)[2]] + t[6:],
         "line 6: has no finite number in V1"),
        (lambda t: t[:2] + [t[2].rsplit(",", 2)[0] + ",Infinity," + t[2].rsplit(",", 1)[1]] + t[3:],
         "line 3: has no finite number in Amount"),
        (lambda t: t[:7] + [t[7].rsplit(",", 1)[0] + ',"2"'] + t[8:], 'line 8: has Class 2.0; expected "0" or "1"'),
        (lambda t: t[:9] + [t[9].rsplit(",", 1)[0] + ","] + t[10:], "line 10: has no finite number in Class"),
        (lambda t: t[:1], "has a header but no transactions"),
    ],
)
def test_bad_input_is_an_error_naming_the_line(spark, tmp_path, edit, message):
    path = _write(tmp_path / "creditcard.csv", lines=edit)
    with pytest.raises(CreditCardDataError) as caught:
        creditcard.read_transactions(spark, path)
    assert message in str(caught.value)


def test_empty_file_and_missing_file(spark, tmp_path):
    (tmp_path / "creditcard.csv").write_text("")
    with pytest.raises(CreditCardDataError, match="is empty"):
        creditcard.read_transactions(spark, str(tmp_path / "creditcard.csv"))
    with pytest.raises(FileNotFoundError, match="creditcard.csv.*kaggle.com/mlg-ulb/creditcardfraud"):
        creditcard.find_creditcard_file(str(tmp_path / "nowhere"))


def test_generator_writes_the_real_size_and_counts():
    table = creditcard.generate_transactions(seed=0)
    assert table.shape == (284_807, 31) and int(table[:, -1].sum()) == 492
    assert len(np.unique(table, axis=0)) == 284_807 - 1_081  # the real file's duplicates
    assert (np.diff(table[:, 0]) >= 0).all() and table[-1, 0] < 172_800  # two days, in time order
    normal, fraud = table[table[:, -1] == 0], table[table[:, -1] == 1]
    # Frauds differ in a few components (V14 most), not in all of them.
    assert fraud[:, 14].mean() < normal[:, 14].mean() - 1 and abs(fraud[:, 20].mean() - normal[:, 20].mean()) < 0.5
