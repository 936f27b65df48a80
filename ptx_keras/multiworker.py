"""Multi-worker training (`train.strategy: multi_worker`): TF_CONFIG, start-up, sharding and lost peers.

Every worker runs `ptx-train` with its own `TF_CONFIG` (docs/training.md, docs/scaling.md). What can go wrong with a
peer is turned into one clear error naming it, within `train.worker_timeout_s`:

* start-up: `multi_worker_strategy` first waits for every peer's address to accept a connection
  (`wait_for_peers`), up to the timeout; TensorFlow's own start-up would wait forever, holding the interpreter,
  deaf to SIGTERM. While waiting, SIGTERM stops the process with an error (the caller removes the run directory it
  created); while TensorFlow connects (after every peer answered) SIGTERM is the system default (the process ends);
* collectives: every collective operation times out after the same time (`CommunicationOptions.timeout_seconds`);
  the error TensorFlow raises is turned into the `WorkerLostError` of `lost_worker_error`.
"""

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time

from ptx_keras import constants as C
from ptx_keras.errors import ConfigError, WorkerLostError
from ptx_keras.runs import RunDir

__all__ = [
    "TF_CONFIG_VARIABLE",
    "Worker",
    "check_multi_worker_data",
    "describe_task",
    "lost_worker_error",
    "multi_worker_strategy",
    "patch_keras_for_multi_worker",
    "read_tf_config",
    "shard_by_data",
    "wait_for_peers",
    "worker_scratch",
]


logger = logging.getLogger(__name__)

TF_CONFIG_VARIABLE = "TF_CONFIG"
_TF_CONFIG_HELP = (
    'e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
    "(docs/training.md, Distribution)"
)


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in a multi-worker cluster, as `TF_CONFIG` describes it.

    Attributes:
        task_type: `"worker"` (or `"chief"` in a cluster with a separate chief job).
        index: Its index in that job.
        cluster: `{job: ["host:port", ...]}`: the `chief` and `worker` jobs.
    """

    task_type: str
    index: int
    cluster: dict

    @property
    def is_chief(self):
        """TensorFlow's rule: the `chief` task, or worker 0 when the cluster has no chief job."""
        return self.task_type == "chief" or ("chief" not in self.cluster and self.index == 0)

    @property
    def count(self):
        """Processes that train (chief and workers)."""
        return sum(len(self.cluster.get(job, ())) for job in ("chief", "worker"))

    @property
    def name(self):
        return describe_task(self.cluster, self.task_type, self.index)


def describe_task(cluster, task_type, index):
    """`"worker 1 (host2:12345)"`: a task and its address in the cluster."""
    addresses = cluster.get(task_type, [])
    address = addresses[index] if 0 <= index < len(addresses) else "not in TF_CONFIG"
    return f"{task_type} {index} ({address})"


def read_tf_config(environ=None):
    """Reads and checks `TF_CONFIG` (TensorFlow's own messages about a bad one are obscure).

    Args:
        environ: The environment (default `os.environ`).

    Returns:
        `Worker`.

    Raises:
        ConfigError: if TF_CONFIG is missing, is not JSON, or lacks a cluster with `worker` (or `chief`) addresses
            or a task whose type and index are in that cluster.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(TF_CONFIG_VARIABLE)
    if not raw:
        raise ConfigError(
            f"train.strategy=multi_worker needs the {TF_CONFIG_VARIABLE} environment variable, {_TF_CONFIG_HELP}"
        )
    try:
        spec = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{TF_CONFIG_VARIABLE} is not valid JSON ({e}): {raw!r}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    jobs = {job: cluster[job] for job in ("chief", "worker") if isinstance(cluster, dict) and cluster.get(job)}
    if not jobs or not all(isinstance(a, list) and all(isinstance(x, str) for x in a) for a in jobs.values()):
        raise ConfigError(
            f"{TF_CONFIG_VARIABLE} needs a cluster with a list of worker addresses, {_TF_CONFIG_HELP}. Received: {raw}"
        )
    task_type = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if (
        task_type not in jobs
        or isinstance(index, bool)
        or not isinstance(index, int)
        or not 0 <= index < len(jobs[task_type])
    ):
        raise ConfigError(
            f"{TF_CONFIG_VARIABLE}'s task must name this process's job and index in the cluster "
            f"({', '.join(f'{job}: 0-{len(a) - 1}' for job, a in jobs.items())}). Received: task={task!r}"
        )
    return Worker(task_type, index, jobs)


def check_multi_worker_data(cfg):
    """Every worker reads the same prepared data set; none may prepare it (they would race on the cache)."""
    from ptx_keras.data.prepared import is_prepared_dir

    path = cfg.data.path
    if not path or not is_prepared_dir(path):
        raise ConfigError(
            "train.strategy=multi_worker trains from a prepared data set on storage every worker sees: prepare it "
            "once (ptx-prepare SOURCE OUT) and pass --data OUT to every worker. Received: data.path="
            f"{path or 'null (phantoms)'}"
        )


def worker_scratch(run, worker):
    """A non-chief worker's private run directory: a temporary copy of the chief's resume state.

    All workers must take the same decisions at every epoch end (a worker stopping early while the others wait
    for it would hang the cluster), so each one restores the same backup and history as the chief. Only the
    chief writes the run directory; the others write to this copy, which `train` removes.
    """
    scratch = RunDir(tempfile.mkdtemp(prefix=f"ptx-{worker.task_type}{worker.index}-"))
    if os.path.isfile(run.history_file):
        shutil.copy2(run.history_file, scratch.history_file)
    if os.path.isdir(run.backup_dir):
        shutil.copytree(run.backup_dir, scratch.backup_dir)
    return scratch


def shard_by_data(dataset):
    """Each worker reads the whole stream and keeps its slice of every global batch (tf.data's DATA sharding).

    tf.distribute's default (AUTO) shards by FILE when the input lists files: each worker would then read its own
    shards, whose example counts differ, so workers would run different numbers of steps and hang; and no
    worker's batches would be those a single process sees.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def patch_keras_for_multi_worker(model, strategy, element_spec):
    """Works around Keras 3's Model.fit under MultiWorkerMirroredStrategy (Keras 3.15, TensorFlow 2.21).

    * `fit` first builds the model symbolically from one distributed batch, which it averages with
      `strategy.reduce("MEAN", (x, y), axis=None)`; the multi-worker reduce takes single tensors, not the
      `(x, y)` tuple ("Attempt to convert a value (PerReplica...)"). The build needs only shapes: it is done
      here from zeros of the dataset's element spec, and `fit` skips its own.
    * Each step's logs (scalars) are averaged across workers with `strategy.reduce("MEAN", v, axis=0)`, which
      fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388).
      The train and test steps here return each log as a 1-element vector: the reduce along axis 0 then gives
      the mean over the replicas, a scalar, as for one worker.

    Instance attributes only: the `.keras` files are unchanged. tests/test_multiworker.py fails if a Keras
    upgrade breaks this.
    """
    import tensorflow as tf
    from keras import ops

    def zeros(spec):
        return tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype)

    with strategy.scope():
        model._symbolic_build(data_batch=tf.nest.map_structure(zeros, element_spec))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def vector_logs(step):
        def wrapped(data):
            return {name: ops.reshape(value, (1,)) for name, value in step(data).items()}

        return wrapped

    model.train_step = vector_logs(model.train_step)
    model.test_step = vector_logs(model.test_step)


# TensorFlow raises these when a collective operation loses a peer (connection refused or reset, coordination
# service heartbeats missed, collectives aborted by the health check).
_PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")
_TASK_PATTERN = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
_CAUSE_PATTERN = re.compile(r"refused|unhealthy|heartbeat|failed to connect|is down|deadline|abort|unavailable", re.I)


def _mentioned(address, message):
    """Whether `host:port` appears in `message` as written or with the host resolved (gRPC writes `ipv4:IP:PORT`)."""
    import socket

    host, _, port = address.rpartition(":")
    names = {address}
    try:
        names.add(f"{socket.gethostbyname(host)}:{port}")
    except OSError:
        pass
    return any(re.search(rf"(?<![\w.]){re.escape(name)}(?!\d)", message) for name in names)


def lost_worker_error(error, worker, run):
    """The `WorkerLostError` for a TensorFlow error that means a peer stopped, or None for any other error.

    The peer is named from the tasks (`/job:worker/replica:0/task:1`) and addresses TensorFlow's message
    mentions, other than this process.
    """
    import tensorflow as tf

    if not (isinstance(error, tf.errors.OpError) and type(error).__name__ in _PEER_ERRORS):
        return None
    message = str(error)
    tasks = {(job, int(i)) for job, i in _TASK_PATTERN.findall(message)}
    for job, addresses in worker.cluster.items():
        tasks.update((job, i) for i, address in enumerate(addresses) if _mentioned(address, message))
    tasks.discard((worker.task_type, worker.index))
    peers = ", ".join(describe_task(worker.cluster, job, i) for job, i in sorted(tasks)) or "another worker"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node"))]
    cause = next((line for line in lines if _CAUSE_PATTERN.search(line)), lines[0] if lines else "")
    return WorkerLostError(
        f"Multi-worker training stopped on {worker.name}: {peers} stopped or cannot be reached "
        f"({type(error).__name__}: {cause[:200]}). Start the same command again on every worker: training resumes "
        f"from the last finished epoch ({run.backup_dir})"
    )


# --------------------------------------------------------------------------------------------------------------
# Start-up with a timeout
# --------------------------------------------------------------------------------------------------------------
_POLL_S = 0.25  # between connection attempts to a peer that does not answer yet


def _split_address(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _answers(address, timeout=1.0):
    try:
        with socket.create_connection(_split_address(address), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM while the workers wait for each other."""


def wait_for_peers(worker, timeout_s):
    """Waits until every other task's address in TF_CONFIG accepts a TCP connection, listening on this task's port
    meanwhile so that the peers see this one too.

    TensorFlow's `MultiWorkerMirroredStrategy` start-up blocks, without a timeout and holding the interpreter, until
    every task has started; this check before it turns a peer that never starts into an error naming it.

    Args:
        worker: This process's `Worker`.
        timeout_s: Seconds to wait.

    Raises:
        WorkerLostError: naming the peers that did not answer, or the SIGTERM received while waiting.
        ConfigError: if this task's own port cannot be listened on (named).
    """
    own = worker.cluster[worker.task_type][worker.index]
    peers = [
        (job, i, address)
        for job, addresses in worker.cluster.items()
        if job in ("chief", "worker")
        for i, address in enumerate(addresses)
        if (job, i) != (worker.task_type, worker.index)
    ]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", _split_address(own)[1]))
        listener.listen(64)
    except OSError as e:
        listener.close()
        raise ConfigError(
            f"{worker.name}: cannot listen on port {_split_address(own)[1]} of its TF_CONFIG address "
            f"{own} ({e.strerror or e}); is another process using it?"
        ) from None

    def stop(signum, frame):
        raise _Stopped()

    handler = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    waiting, deadline = list(peers), time.monotonic() + timeout_s
    try:
        while waiting:
            waiting = [peer for peer in waiting if not _answers(peer[2])]
            if waiting and time.monotonic() >= deadline:
                names = ", ".join(describe_task(worker.cluster, job, i) for job, i, _ in waiting)
                raise WorkerLostError(
                    f"Multi-worker start-up on {worker.name}: {names} did not answer within {timeout_s:g} s "
                    "(train.worker_timeout_s). Start ptx-train with the same configuration on every worker of "
                    f"{TF_CONFIG_VARIABLE}, or check its addresses"
                )
            if waiting:
                time.sleep(_POLL_S)
    except _Stopped:
        raise WorkerLostError(
            f"Multi-worker start-up on {worker.name} stopped by SIGTERM while waiting for its peers"
        ) from None
    finally:
        listener.close()
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    logger.info("%s: all %d peers answered", worker.name, len(peers))


def multi_worker_strategy(worker, timeout_s=C.WORKER_TIMEOUT_S):
    """`tf.distribute.MultiWorkerMirroredStrategy` once every peer answered (`wait_for_peers`), with collective
    operations that time out after `timeout_s` seconds.

    Raises:
        WorkerLostError: naming the peers that did not answer within `timeout_s`.
    """
    import tensorflow as tf

    wait_for_peers(worker, timeout_s)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=float(timeout_s))
    # TensorFlow now connects to the peers without returning to Python: let SIGTERM end the process meanwhile.
    main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGTERM, signal.SIG_DFL) if main else None
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
