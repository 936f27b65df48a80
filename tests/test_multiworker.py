"""Multi-worker training (`train.strategy: multi_worker`, TensorFlow's MultiWorkerMirroredStrategy) with two worker
processes on this machine, each started by `ptx-train` with its own `TF_CONFIG`.

What is checked:

* both workers exit 0; only the chief (worker 0) writes the run directory, the other writes a temporary copy of the
  resume state in its own temporary directory and removes it;
* the global batch is split as docs/training.md says: at every step worker i trains on images
  [i * b / n, (i + 1) * b / n) of the global batch of b images that a single process draws (the test records the
  images of every step inside the train step of each process);
* the chief's weights after 2 epochs equal those of a single-process run with the same global batch. The model has
  no BatchNormalization (`unet` with `batch_norm: false`): with it, each replica would normalise with the
  statistics of its own b / n images and the two runs would compute different things (docs/training.md). The
  remaining differences are float32 rounding: the mean loss of the batch is the mean of two half-batch means
  instead of one mean over b images (relative rounding 2^-24 ~ 6e-8 per sum), carried through 4 Adam steps of
  at most lr = 1e-3 each; 1e-6 is far below one step (a wrong split or a missing gradient all-reduce changes
  weights by ~1e-3) and measured differences were at most 6e-8;
* killing worker 1 mid-epoch stops the chief with a one-line error naming worker 1, and the same command on both
  workers resumes from the last backup and finishes with every epoch exactly once.

Ports: two free localhost ports chosen at the start of each test.
"""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 600  # seconds per worker process: generous for a loaded 2-core machine; a hang fails the test
IMAGES = 16  # split 8 train / 4 val / 4 test: with a global batch of 4, 2 steps per epoch
BATCH = 4

CONFIG = textwrap.dedent(
    """
    name: mw
    data: {image_size: 32, channels: 1}
    model:
      name: unet
      options: {base_filters: 4, depth: 2, batch_norm: false}
    loss: {name: sw_cel}
    train:
      epochs: 2
      batch_size: 4
      learning_rate: 1.0e-3
      early_stopping_patience: null
      tensorboard: false
      evaluate: false
      export: false
      jit_compile: "off"
    """
)

# Each worker runs ptx-train's main, instrumented by `instrument` (below) to record what it trains on.
WORKER_SCRIPT = textwrap.dedent(
    f"""
    import os, sys
    sys.path.insert(0, {TESTS_DIR!r})
    import test_multiworker
    test_multiworker.instrument(os.environ["PTX_TEST_RECORD"], float(os.environ.get("PTX_TEST_SLOW", "0")))
    from ptx_keras.cli.train import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _task():
    """This process's task index from TF_CONFIG, or "single"."""
    raw = os.environ.get("TF_CONFIG")
    return str(json.loads(raw)["task"]["index"]) if raw else "single"


def instrument(record_dir, slow=0.0):
    """Makes training record, per process, the images of each step and its progress; optionally slows steps.

    * `batches-<task>.txt`: one line per train step (written inside the replica's train step with `tf.print`):
      the number of images and the sum of each image's pixels (identifies the image);
    * `progress-<task>.txt`: `epoch batch` after each finished step (the kill test waits for it);
    * `slow` seconds of sleep after each step, so that a kill lands in the middle of an epoch.
    """
    import keras
    import tensorflow as tf

    import ptx_keras.training as training

    task = _task()
    batches = os.path.join(record_dir, f"batches-{task}.txt")
    progress = os.path.join(record_dir, f"progress-{task}.txt")
    build, callbacks = training.build_and_compile, training.make_callbacks

    def recording_build(cfg, jit_compile="auto"):
        model = build(cfg, jit_compile=jit_compile)
        step = model.train_step

        def train_step(data):
            x = data[0]
            tf.print(tf.shape(x)[0], tf.reduce_sum(x, axis=[1, 2, 3]), summarize=-1, output_stream=f"file://{batches}")
            return step(data)

        model.train_step = train_step
        return model

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            with open(progress, "a") as f:
                f.write(f"{self.epoch} {batch}\n")
            time.sleep(slow)

    training.build_and_compile = recording_build
    training.make_callbacks = lambda cfg, run: callbacks(cfg, run) + [Progress()]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """16 phantoms at 32 px prepared into 2-image shards: several shards per split, so that tf.distribute's default
    (file-based) sharding would apply if training did not choose data-based sharding."""
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("mw-data")
    write_phantom_dataset(str(root / "raw"), IMAGES, size=32, seed=3, progress=False, workers=1)
    prepare_dataset(
        str(root / "raw"),
        str(root / "prepared"),
        image_size=32,
        split_fractions=(0.5, 0.25, 0.25),
        shard_size=2,
        workers=1,
        progress=False,
    )
    return str(root / "prepared")


def _args(tmp_path, prepared, output, *extra):
    config = tmp_path / "mw.yaml"
    config.write_text(CONFIG)
    args = ["--config", str(config), "--data", prepared, "--output-dir", str(output), "--verbose", "0"]
    for item in extra:
        args += ["--set", item]
    return args


def _start_workers(tmp_path, args, ports, record, slow=0.0):
    cluster = [f"localhost:{port}" for port in ports]
    procs = []
    for index in range(len(ports)):
        scratch = tmp_path / f"tmp{index}"  # each worker's TMPDIR: where a non-chief puts its scratch run directory
        scratch.mkdir(exist_ok=True)
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            TMPDIR=str(scratch),
            PTX_TEST_RECORD=str(record),
            PTX_TEST_SLOW=str(slow),
            TF_CONFIG=json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}),
        )
        cmd = [sys.executable, "-c", WORKER_SCRIPT, *args, "--set", "train.strategy=multi_worker"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs):
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a worker did not finish in time (a hung collective?)")
        results.append((proc.returncode, out, err))
    return results


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _steps(path):
    """[(images, [pixel sum per image])] per recorded train step."""
    steps = []
    with open(path) as f:
        for line in f:
            m = re.fullmatch(r"(\d+) \[(.*)\]", line.strip())
            steps.append((int(m.group(1)), [float(v) for v in m.group(2).split()]))
    return steps


def _weights(path):
    """Every array of a Keras `.weights.h5` file, by its path inside the file."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow
def test_two_workers_train_like_one_process_with_the_global_batch_split(tmp_path, prepared, monkeypatch):
    record = tmp_path / "record"
    record.mkdir()
    args = _args(tmp_path, prepared, tmp_path / "runs")
    procs = _start_workers(tmp_path, args, _free_ports(2), record)
    scratch_seen = False
    while any(p.poll() is None for p in procs):  # worker 1's scratch run directory exists while it trains
        scratch_seen = scratch_seen or any(
            name.startswith("ptx-worker1-") and os.path.isfile(tmp_path / "tmp1" / name / "history.csv")
            for name in os.listdir(tmp_path / "tmp1")
        )
        time.sleep(0.2)
    results = _finish(procs)
    for index, (rc, _, err) in enumerate(results):
        assert rc == 0, f"worker {index}: {err[-3000:]}"
    assert "worker 0 (localhost" in results[0][2] and "(chief)" in results[0][2]
    assert "2 images per step of the global batch of 4" in results[1][2]
    assert scratch_seen and os.listdir(tmp_path / "tmp1") == [], "worker 1's scratch directory must be removed"
    assert os.listdir(tmp_path / "tmp0") == []  # the chief writes only the run directory
    run = tmp_path / "runs" / "mw"
    assert sorted(os.listdir(run)) == [
        "best.keras",
        "checkpoints",
        "config.yaml",
        "history.csv",
        "run.json",
        "training_curves.png",
    ]
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "trained" and meta["distribution"]["replicas"] == 2
    assert [int(r["epoch"]) for r in _history(str(run))] == [0, 1]

    # The same configuration in one process (default strategy), recording its batches the same way.
    from ptx_keras.cli.train import main as train_main

    single_record = tmp_path / "single"
    single_record.mkdir()
    monkeypatch.delenv("TF_CONFIG", raising=False)
    import ptx_keras.training as training

    monkeypatch.setattr(training, "build_and_compile", training.build_and_compile)
    monkeypatch.setattr(training, "make_callbacks", training.make_callbacks)
    instrument(str(single_record))
    assert train_main(_args(tmp_path, prepared, tmp_path / "single_runs")) == 0

    single = _steps(single_record / "batches-single.txt")
    w0, w1 = _steps(record / "batches-0.txt"), _steps(record / "batches-1.txt")
    assert len(single) == len(w0) == len(w1) == 4  # 2 epochs x 2 steps
    for step, (whole, first, second) in enumerate(zip(single, w0, w1)):
        assert whole[0] == BATCH and first[0] == second[0] == BATCH // 2, step
        np.testing.assert_allclose(first[1] + second[1], whole[1], rtol=1e-6, err_msg=f"step {step}")
    assert len({tuple(s[1]) for s in single}) == 4  # 4 different batches: the data really moves

    chief = _weights(run / "checkpoints" / "backup" / "latest.weights.h5")
    alone = _weights(tmp_path / "single_runs" / "mw" / "checkpoints" / "backup" / "latest.weights.h5")
    assert chief.keys() == alone.keys() and len(chief) > 10
    for name in chief:
        np.testing.assert_allclose(chief[name], alone[name], rtol=0, atol=1e-6, err_msg=name)
    for ours, theirs in zip(_history(str(run)), _history(str(tmp_path / "single_runs" / "mw"))):
        for key in ("loss", "val_loss", "dsc1", "val_dsc1"):
            assert float(ours[key]) == pytest.approx(float(theirs[key]), rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_and_the_same_command_resumes(tmp_path, prepared):
    record = tmp_path / "record"
    record.mkdir()
    args = _args(tmp_path, prepared, tmp_path / "runs")
    ports = _free_ports(2)
    procs = _start_workers(tmp_path, args, ports, record, slow=0.5)
    progress = record / "progress-1.txt"
    deadline = time.time() + TIMEOUT
    while not (progress.is_file() and progress.read_text().splitlines()[-1:] == ["1 0"]):  # in epoch 2, step 1
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            pytest.fail(
                "training ended or stalled before worker 1 could be killed mid-epoch: "
                + "".join(p.communicate()[1][-2000:] for p in procs)
            )
        time.sleep(0.05)
    os.kill(procs[1].pid, signal.SIGKILL)
    rc, _, err = _finish(procs[:1])[0]
    procs[1].wait()
    assert rc == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    assert re.match(
        rf"error: Multi-worker training stopped on worker 0 \(localhost:{ports[0]}\): worker 1 \(localhost:{ports[1]}\) "
        r"stopped or cannot be reached \(\w+Error: .+\)\. Start the same command again on every worker: training "
        r"resumes from the last finished epoch \(.+checkpoints/backup\)$",
        lines[0],
    ), lines[0]
    run = tmp_path / "runs" / "mw"
    assert [int(r["epoch"]) for r in _history(str(run))] == [0]  # the backup holds epoch 1

    results = _finish(_start_workers(tmp_path, args, _free_ports(2), record))
    for index, (rc, _, err) in enumerate(results):
        assert rc == 0, f"worker {index}: {err[-3000:]}"
        assert "Resuming at epoch 2" in err  # both restored the chief's backup
    assert [int(r["epoch"]) for r in _history(str(run))] == [0, 1]
    assert json.loads((run / "run.json").read_text())["status"] == "trained"


# --------------------------------------------------------------------------------------------------------------
# TF_CONFIG, the lost-worker message and what multi_worker refuses (no processes started)
# --------------------------------------------------------------------------------------------------------------
CLUSTER = {"worker": ["host1:12345", "host2:12345"]}


def _tf_config(**spec):
    return {"TF_CONFIG": json.dumps(spec)}


def test_read_tf_config_gives_the_workers_role():
    from ptx_keras.training import read_tf_config

    worker = read_tf_config(_tf_config(cluster=CLUSTER, task={"type": "worker", "index": 1}))
    assert (worker.index, worker.count, worker.is_chief, worker.name) == (1, 2, False, "worker 1 (host2:12345)")
    assert read_tf_config(_tf_config(cluster=CLUSTER, task={"type": "worker", "index": 0})).is_chief
    with_chief = {"chief": ["host0:1"], **CLUSTER}
    assert not read_tf_config(_tf_config(cluster=with_chief, task={"type": "worker", "index": 0})).is_chief
    chief = read_tf_config(_tf_config(cluster=with_chief, task={"type": "chief", "index": 0}))
    assert chief.is_chief and chief.count == 3


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "needs the TF_CONFIG environment variable"),
        ({"TF_CONFIG": "{cluster"}, "TF_CONFIG is not valid JSON"),
        (_tf_config(task={"type": "worker", "index": 0}), "needs a cluster with a list of worker addresses"),
        (_tf_config(cluster={"worker": "host1:1"}, task={"type": "worker", "index": 0}), "list of worker addresses"),
        (_tf_config(cluster=CLUSTER, task={"type": "worker", "index": 2}), r"worker: 0-1\)\. Received: task="),
        (_tf_config(cluster=CLUSTER, task={"type": "ps", "index": 0}), "must name this process's job and index"),
        (_tf_config(cluster=CLUSTER), "Received: task=None"),
    ],
)
def test_read_tf_config_refuses_a_bad_one(environ, message):
    from ptx_keras.errors import ConfigError
    from ptx_keras.training import read_tf_config

    with pytest.raises(ConfigError, match=message):
        read_tf_config(environ)


@pytest.mark.parametrize(
    "text",
    [
        "Graph execution error:\n\nfailed to connect to all addresses; last error: UNKNOWN: ipv4:{ip}:23502: "
        "Failed to connect to remote host: Connection refused",
        "Collective ops is aborted by: ... from remote target /job:worker/replica:0/task:1 while calling RecvBuf",
        "The following tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1",
    ],
)
def test_a_lost_peer_is_named(text):
    import tensorflow as tf

    from ptx_keras.errors import WorkerLostError
    from ptx_keras.runs import RunDir
    from ptx_keras.training import lost_worker_error, read_tf_config

    cluster = {"worker": ["localhost:23501", "localhost:23502"]}
    worker = read_tf_config(_tf_config(cluster=cluster, task={"type": "worker", "index": 0}))
    error = tf.errors.UnavailableError(None, None, text.format(ip=socket.gethostbyname("localhost")))
    lost = lost_worker_error(error, worker, RunDir("/shared/runs/r"))
    assert isinstance(lost, WorkerLostError)
    assert str(lost).startswith(
        "Multi-worker training stopped on worker 0 (localhost:23501): worker 1 "
        "(localhost:23502) stopped or cannot be reached (UnavailableError: "
    )
    assert str(lost).endswith("training resumes from the last finished epoch (/shared/runs/r/checkpoints/backup)")
    assert "Graph execution error" not in str(lost)
    assert lost_worker_error(ValueError(text), worker, RunDir("/r")) is None  # not a peer failure
    assert lost_worker_error(tf.errors.InvalidArgumentError(None, None, text), worker, RunDir("/r")) is None


def test_multi_worker_needs_a_prepared_data_set(tmp_path, monkeypatch, capsys):
    from ptx_keras.cli.train import main as train_main

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 0}}))
    rc = train_main(["--output-dir", str(tmp_path / "runs"), "--name", "mw", "--set", "train.strategy=multi_worker"])
    err = capsys.readouterr().err
    assert rc == 2
    assert (
        "error: train.strategy=multi_worker trains from a prepared data set on storage every worker sees: "
        "prepare it once (ptx-prepare SOURCE OUT) and pass --data OUT to every worker. Received: data.path=null "
        "(phantoms)" in err
    )
    assert not (tmp_path / "runs").exists()  # nothing written


# --------------------------------------------------------------------------------------------------------------
# A peer that never starts (issue 25): a bounded wait, an error naming it, SIGTERM honoured, no run left behind
# --------------------------------------------------------------------------------------------------------------
def _start_alone(tmp_path, prepared, ports, timeout_s):
    """Worker 0 of a two-worker TF_CONFIG, started alone (worker 1 never starts)."""
    args = _args(
        tmp_path, prepared, tmp_path / "runs", f"train.worker_timeout_s={timeout_s}", "train.strategy=multi_worker"
    )
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_CONFIG=json.dumps(
            {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": 0}}
        ),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "ptx_keras.cli.train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.mark.slow
def test_an_unreachable_peer_stops_start_up_within_the_timeout_naming_it(tmp_path, prepared):
    ports = _free_ports(2)
    started = time.monotonic()
    proc = _start_alone(tmp_path, prepared, ports, 5)
    try:
        _, err = proc.communicate(timeout=120)  # TensorFlow's import and the 5 s wait; without it: forever
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("worker 0 still waits for its missing peer")
    assert proc.returncode == 2, err[-3000:]
    assert _error_line(err) == (
        f"error: Multi-worker start-up on worker 0 (localhost:{ports[0]}): worker 1 (localhost:{ports[1]}) did not "
        "answer within 5 s (train.worker_timeout_s). Start ptx-train with the same configuration on every worker of "
        "TF_CONFIG, or check its addresses"
    )
    assert time.monotonic() - started < 120
    assert not (tmp_path / "runs" / "mw").exists()  # the run directory it had made is removed


@pytest.mark.slow
def test_sigterm_stops_a_worker_waiting_for_its_peers(tmp_path, prepared):
    ports = _free_ports(2)
    proc = _start_alone(tmp_path, prepared, ports, 600)
    deadline = time.time() + 120
    while True:  # worker 0 listens on its own port while it waits for worker 1
        try:
            socket.create_connection(("localhost", ports[0]), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("worker 0 never started waiting: " + proc.communicate()[1][-2000:])
            time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM ignored")
    assert proc.returncode == 2, err[-3000:]
    assert _error_line(err) == (
        f"error: Multi-worker start-up on worker 0 (localhost:{ports[0]}) stopped by SIGTERM "
        "while waiting for its peers"
    )
    assert not (tmp_path / "runs" / "mw").exists()
