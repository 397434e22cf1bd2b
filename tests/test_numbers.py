"""dsf_app.numbers: errors and measures written for people, in text and in the pages' tables."""

import math

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dsf_app import numbers


@pytest.mark.parametrize("value, digits, text", [
    (5.02e-15, 3, "5.02e-15"),  # a tensor-train error on a Kronecker product: never 0.000000000000005
    (5e-15, 3, "5e-15"),
    (0.30412, 3, "0.304"),
    (0.0012345, 3, "0.00123"),
    (1234567.0, 3, "1.23e6"),
    (177.0, 3, "177"),
    (0.97555, 4, "0.9756"),
    (-2.5e-7, 3, "-2.5e-7"),
    (0.0, 3, "0"),
    (None, 3, "-"),
    (math.nan, 3, "-"),
])
def test_readable_keeps_significant_digits_and_writes_tiny_numbers_as_powers_of_ten(value, digits, text):
    assert numbers.readable(value, digits) == text


def test_readable_rounds_to_the_value_it_prints():
    for value in (5.0123e-15, 0.123456, 98765.4321, 3.0e12):
        assert float(numbers.readable(value)) == pytest.approx(value, rel=5e-3)


def test_fractional_columns_are_the_floats_that_are_not_counts():
    frame = pd.DataFrame({
        "method": ["tt", "svd"], "relative error": [5e-15, 0.3], "parameters": [1234.0, None],
        "bytes": [10, 20], "seconds": [0.5, math.nan],
    })
    assert numbers.fractional_columns(frame) == ["relative error", "seconds"]


def _table_page():
    import pandas as pd
    from dsf_app import numbers

    numbers.table(pd.DataFrame({"method": ["tt", "svd"], "relative error": [5e-15, 0.3], "parameters": [1234.0, None]}))


def test_a_table_shows_its_fractions_to_three_significant_digits_and_keeps_the_values():
    at = AppTest.from_function(_table_page).run()
    (frame,) = at.dataframe
    assert list(frame.value["relative error"]) == [5e-15, 0.3]  # exact values, for sorting and copying
    config = frame.proto.columns
    assert '"relative error"' in config and '"format":"%.3g"' in config.replace(" ", "")
    assert '"parameters"' not in config  # counts keep their own format
