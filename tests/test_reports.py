"""`ptx_keras.reports`: table cells, Markdown and LaTeX tables, text files (expected outputs written by hand)."""

import math

import numpy as np
import pandas as pd
import pytest

from ptx_keras.reports import cell_text, latex_escape, latex_table, markdown_table, write_text


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ""),
        (pd.NA, ""),
        (math.nan, ""),
        (np.float64("nan"), ""),
        (1234567, "1,234,567"),
        (np.int64(-1000), "-1,000"),
        (True, "True"),  # a bool is not a count
        (0.25, "0.25"),
        ("0.50 (0.10)", "0.50 (0.10)"),
    ],
)
def test_cell_text_by_hand(value, expected):
    assert cell_text(value) == expected


def test_markdown_and_latex_rendering():
    df = pd.DataFrame({"Method": ["A_b & c", "x|y"], "DSC1": ["0.50 (0.10)$^{*}$", "1"]})

    md = markdown_table(df)
    assert md.splitlines()[:2] == ["| Method | DSC1 |", "|---|---|"] and "x\\|y" in md
    tex = latex_table(df, "Cap 50%", raw_columns=["DSC1"])
    assert r"\begin{tabular}{lr}" in tex and r"A\_b \& c & 0.50 (0.10)$^{*}$ \\" in tex
    assert r"\caption{Cap 50\%}" in tex
    assert latex_escape("a_b^c~") == r"a\_b\^{}c\textasciitilde{}"


def test_markdown_table_shows_counts_with_separators_and_missing_as_empty():
    text = markdown_table(pd.DataFrame({"preset": ["a"], "params": [1234567], "paper": [pd.NA]}))
    assert text.splitlines() == ["| preset | params | paper |", "|---|---|---|", "| a | 1,234,567 |  |"]


def test_latex_table_whole_and_label_columns():
    df = pd.DataFrame({"a": ["x"], "b": ["y"], "n": [1500]})
    tex = latex_table(df, "T", label_columns=2)
    assert tex.splitlines() == [
        r"\begin{table}[ht]",
        r"\centering",
        r"\caption{T}",
        r"\begin{tabular}{llr}",
        r"\hline",
        r"a & b & n \\",
        r"\hline",
        r"x & y & 1,500 \\",
        r"\hline",
        r"\end{tabular}",
        r"\end{table}",
    ]
    assert tex.endswith("\\end{table}\n")
    assert r"\begin{tabular}{ll}" in latex_table(df[["a", "b"]], "T", label_columns=5)  # capped at the columns


def test_latex_escape_every_special_character():
    assert latex_escape("\\&%$#_{}~^") == r"\textbackslash{}\&\%\$\#\_\{\}\textasciitilde{}\^{}"
    assert latex_escape(3) == "3"


def test_write_text_creates_the_folder_and_writes_utf8(tmp_path):
    path = tmp_path / "a" / "b" / "t.md"
    assert write_text(str(path), "Dice ≥ 0.5\n") == str(path)
    assert path.read_bytes() == b"Dice \xe2\x89\xa5 0.5\n"  # UTF-8 whatever the locale
