"""Runs every ```python block of README.md and docs/**/*.md as a standalone program (issue 29).

Each block is written to a file and run with this Python in a fresh process, in an empty temporary directory,
with the repository root first on PYTHONPATH; it passes when it exits 0 within `TIMEOUT_S`. Blocks therefore
must be complete programs (imports included) that run on a CPU. The fence's info string after `python` selects
how (a mkdocs hook, `docs_hooks.py`, strips these words for the site):

* ```` ```python ````: run under `KERAS_BACKEND=tensorflow`.
* ```` ```python notest ````: not run (a GPU, real data, a server, minutes of work); the sentence right before the
  fence says why, which `test_notest_blocks_say_why` checks is there.
* ```` ```python backend=jax ```` (or `torch`): run under that Keras backend, marked `backends`. Without the
  backend installed the case skips, except with `PTX_REQUIRE_BACKENDS` set, where it fails: `.ci/run` sets it in
  its JAX run, which runs this file's `backends` cases after installing JAX.

Blocks in one page do not share state: each is its own program. The programs of the selected cases run two at a time
(`examples_run`): most of an example's wall time is its Python and TensorFlow start-up, which the other one's
computation overlaps on a 2-core CI machine; each case still checks its own program's exit status and timeout.
"""

import concurrent.futures
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # a generous bound on a shared machine; each example takes well under a minute on 2 idle cores
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
BACKEND_FLAG = re.compile(r"^backend=(?P<backend>tensorflow|jax|torch)$")
KNOWN_FLAGS = "notest, backend=tensorflow|jax|torch"
PARALLEL = 2  # example programs run at once


def doc_files():
    """README.md and every Markdown page under docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(path):
    """Yields `(line, language, flags, code, text_before)` for each fenced block of a Markdown file.

    `line` is the 1-based line of the opening fence, `flags` the info-string words after the language,
    `text_before` the nearest non-blank line above the fence.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        words = opening["info"].split()
        body = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        yield i + 1, (words[0].lower() if words else ""), words[1:], "\n".join(body) + "\n", before
        i = j + 1


def python_blocks():
    """Every ```python block of the docs as `(id, flags, code, text_before)`."""
    for path in doc_files():
        for line, language, flags, code, before in code_blocks(path):
            if language in ("python", "py"):
                yield f"{path.relative_to(ROOT).as_posix()}:{line}", flags, code, before


def _backend(flags):
    for flag in flags:
        match = BACKEND_FLAG.match(flag)
        if match:
            return match["backend"]
    return "tensorflow"


def _cases():
    cases = []
    for block_id, flags, code, _ in python_blocks():
        if "notest" in flags:
            continue
        backend = _backend(flags)
        marks = [pytest.mark.slow] + ([pytest.mark.backends] if backend != "tensorflow" else [])
        cases.append(pytest.param(code, backend, id=block_id, marks=marks))
    return cases


def test_the_collector_finds_the_examples():
    ids = [block_id for block_id, *_ in python_blocks()]
    assert any(block_id.startswith("README.md:") for block_id in ids)
    assert sum(block_id.startswith("docs/extending.md:") for block_id in ids) >= 6


def test_flags_are_known():
    for block_id, flags, _, _ in python_blocks():
        for flag in flags:
            assert flag == "notest" or BACKEND_FLAG.match(flag), (
                f"{block_id}: unknown word {flag!r} after ```python (known: {KNOWN_FLAGS})"
            )


def test_notest_blocks_say_why():
    # HELPERS.md and this module's docstring: the sentence right before a `python notest` fence gives the reason.
    for block_id, flags, _, before in python_blocks():
        if "notest" in flags:
            assert before and not before.startswith(("```", "~~~", "#", "|")), (
                f"{block_id}: a ```python notest block needs the reason in the sentence right before it"
            )


def _run_example(code, backend, folder):
    """Runs one block as a program in `folder`; returns `(returncode, stdout, stderr, seconds)`."""
    script = folder / "example.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    return result.returncode, result.stdout, result.stderr, time.monotonic() - start


def _installed(backend):
    return backend == "tensorflow" or importlib.util.find_spec(backend) is not None


@pytest.fixture(scope="module")
def examples_run(request, tmp_path_factory):
    """Starts every selected example whose backend is installed, `PARALLEL` at a time, in its own empty folder;
    returns `{(code, backend): future}` (a future's result is `_run_example`'s, or its TimeoutExpired)."""
    selected = [
        (item.callspec.params["code"], item.callspec.params["backend"])
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_docs_example_runs" and item.module is request.module
    ]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL)
    futures = {}
    for code, backend in selected:
        if _installed(backend) and (code, backend) not in futures:
            futures[(code, backend)] = pool.submit(_run_example, code, backend, tmp_path_factory.mktemp("example"))
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("code, backend", _cases())
def test_docs_example_runs(code, backend, examples_run):
    if not _installed(backend):
        if os.environ.get("PTX_REQUIRE_BACKENDS"):
            pytest.fail(f"{backend} is not installed, and PTX_REQUIRE_BACKENDS is set (.ci/run's backend runs)")
        pytest.skip(f"{backend} is not installed (.ci/run installs it and runs this case with -m backends)")
    returncode, stdout, stderr, seconds = examples_run[(code, backend)].result()
    assert returncode == 0, (
        f"the example exited {returncode} after {seconds:.0f} s (KERAS_BACKEND={backend}):\n"
        f"{stdout[-3000:]}\n{stderr[-5000:]}"
    )
