"""Numbers for people: errors and measures to a few significant digits, tiny ones in powers of ten
("5e-15", never "0.000000000000005"), the same in text and in tables."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

DIGITS = 3  # significant digits of an error or a measure
TABLE_FORMAT = f"%.{DIGITS}g"  # the same rule in a table column (sprintf-js, as Streamlit's grid reads it)


def readable(value: float | None, digits: int = DIGITS) -> str:
    """``value`` to ``digits`` significant digits, in powers of ten when tiny or huge (``"5e-15"``,
    ``"0.304"``, ``"1.23e+06"`` as ``"1.23e6"``); ``"-"`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}g}"
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else text


def fractional_columns(frame: pd.DataFrame) -> list[str]:
    """The float columns of ``frame`` that hold fractions (not counts stored as floats beside a
    missing value)."""
    return [
        name for name in frame.columns
        if pd.api.types.is_float_dtype(frame[name]) and (frame[name].dropna() % 1 != 0).any()
    ]


def table(frame: pd.DataFrame, **settings) -> None:
    """``st.dataframe(frame)`` with its fractional columns to :data:`DIGITS` significant digits
    (the values themselves stay exact, for sorting and copying); ``settings`` go to ``st.dataframe``."""
    formats = {name: st.column_config.NumberColumn(format=TABLE_FORMAT) for name in fractional_columns(frame)}
    st.dataframe(frame, column_config=formats, **{"hide_index": True, "width": "stretch", **settings})
