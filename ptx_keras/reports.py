"""Tables people read: one Markdown and one LaTeX writer for every table the package produces.

Evaluation summaries, run comparisons, the experiment tables (paper Tables 2-5) and the model summary all
format their numbers into a display `pandas.DataFrame` and hand it to `markdown_table` / `latex_table`.
"""

import math
import os

import numpy as np
import pandas as pd

__all__ = ["cell_text", "latex_escape", "latex_table", "markdown_table", "write_text"]


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}


def cell_text(value):
    """How a table cell shows a value: "" for missing (None, NaN, pandas NA), integers with thousands
    separators, everything else as `str`."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return str(value)


def markdown_table(df):
    """A DataFrame as a GitHub Markdown table (no index; `|` in cells escaped).

    Args:
        df: The display table: one column per table column, cells already formatted or plain values
            (shown by `cell_text`).

    Returns:
        str, one line per row, without a trailing newline.
    """
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell_text(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def latex_escape(text):
    """Escapes LaTeX special characters in plain text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(df, caption, raw_columns=(), label_columns=1):
    """A DataFrame as a LaTeX `tabular` inside a `table` float (no packages needed).

    Args:
        df: The display table.
        caption: Table caption (plain text, escaped).
        raw_columns: Columns whose cells are already LaTeX (e.g. with `$^{*}$` marks); the others are escaped.
        label_columns: How many leading columns are left-aligned labels; the rest are right-aligned numbers.

    Returns:
        str ending with a newline.
    """
    label_columns = min(len(df.columns), label_columns)
    spec = "l" * label_columns + "r" * (len(df.columns) - label_columns)
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\hline",
        " & ".join(latex_escape(c) for c in df.columns) + r" \\",
        r"\hline",
    ]
    for row in df.itertuples(index=False):
        cells = [str(v) if col in raw_columns else latex_escape(cell_text(v)) for col, v in zip(df.columns, row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_text(path, text):
    """Writes a text file (UTF-8), creating its folder; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
