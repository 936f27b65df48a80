"""The data jobs' process pool: one function over many tasks, with a progress bar, in spawn workers.

Data preparation and the phantom writer run their per-sample work through `run_tasks`.
"""

import multiprocessing
import sys

__all__ = [
    "run_tasks",
]


def run_tasks(function, tasks, workers, *, progress=True, desc=None, ordered=True):
    """Yields `function(task)` for every task: in this process for `workers <= 1` (or one task), else from a pool.

    The pool uses the spawn start method, not fork: the parent may hold TensorFlow's threads, which do not
    survive a fork; the workers import only what `function`'s module imports.

    Args:
        function: A module-level function (pickled by name into the workers).
        tasks: A sequence of picklable arguments, one call each.
        workers: Worker processes (at most one per task).
        progress: Show a tqdm bar on stderr (unit `img`).
        desc: The bar's label.
        ordered: Yield in task order (`imap`); False yields as results arrive (`imap_unordered`).

    Yields:
        The results.
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress or not tasks, file=sys.stderr)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield function(task)
                bar.update()
            return
        chunksize = max(1, min(8, len(tasks) // (workers * 8)))
        with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            mapped = pool.imap if ordered else pool.imap_unordered
            for result in mapped(function, tasks, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()
