"""Lists the functions of a package longer than a limit, in code lines (docstring, blank and comment lines excluded).

    python tools/long_functions.py [ROOT=ptx_keras] [--limit 60]

Prints `lines path:line name`, longest first; exits 0 whatever it finds (a row is a place to look, not a verdict).
"""

import argparse
import ast
import os


def code_lines(node, lines):
    """Code lines of a function: its lines minus its docstring, blank lines and comment-only lines."""
    body = node.body
    doc = set()
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(
        1
        for i in range(node.lineno, node.end_lineno + 1)
        if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def long_functions(root, limit):
    """`[(code lines, "path:line name")]` of the functions under `root` longer than `limit`, longest first."""
    found = []
    for directory, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8") as f:
                source = f.read()
            lines = source.splitlines()
            for node in ast.walk(ast.parse(source, path)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = code_lines(node, lines)
                    if n > limit:
                        found.append((n, f"{path}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default="ptx_keras")
    p.add_argument("--limit", type=int, default=60)
    args = p.parse_args(argv)
    for n, where in long_functions(args.root, args.limit):
        print(n, where)


if __name__ == "__main__":
    main()
