"""Where the time of one training step or inference call goes, per operation type, for the package or the peer.

The package's step or call (set up as `side_by_side.py` does) runs under the TensorFlow profiler; the op
events of the executor threads are summed by op type. The peer's runs under `torch.profiler` (self CPU time
per op). One JSON line per framework, each profiled in its own process: the call's wall time and the top
op types with their milliseconds and shares of the summed op time (ops run on 2 inter-op threads, so the
sum can exceed the wall time).

    python benchmarks/profile_ops.py [--framework package peer] [--task train|infer] [--batch 4]
        [--model fc_densenet103] [--top 25]
    python benchmarks/profile_ops.py --parts [--batch 4]

`--parts` times what the paper's model adds to FC-DenseNet103, each formulation against the alternative it
was chosen over (CPU-milliseconds, median of 5 calls after 2, forward and forward + backward in one
`tf.function` each): the scSE block on 12 channels at 256 and 128 pixels (the package's `SCSEBlock` against eqs.
2-4 written literally: the 1x1 Conv2D sublayer, two products and their sum) and the multi-scale convolution
(three 3/5/7 branches against one 7x7 convolution with the smaller kernels zero-padded). One JSON line each.
"""

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks._machine import machine  # noqa: E402
from benchmarks.side_by_side import CHANNELS, LEARNING_RATE, SIZE, _data  # noqa: E402


def _summed(durations_ms, top, wall_ms):
    total = sum(durations_ms.values())
    ranked = sorted(durations_ms.items(), key=lambda kv: -kv[1])
    return {
        "wall_ms": round(wall_ms),
        "op_ms_total": round(total),
        "ops": [{"op": name, "ms": round(ms, 1), "share": round(ms / total, 3)} for name, ms in ranked[:top]],
    }


def _tensorflow_op_times(logdir):
    """`{op type: ms}` summed over the executor threads' op events of the profile in `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1], "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                if ":" in meta.name and meta.display_name:  # "scope/name:Type" events are op kernels
                    times[meta.display_name] += event.duration_ps / 1e9
    return times


def profile_package(model_name, task, batch, top):
    from ptx_keras.runtime import configure_process

    configure_process()
    import keras
    import numpy as np
    import tensorflow as tf

    from ptx_keras.config import TrainConfig
    from ptx_keras.models import build_model
    from ptx_keras.training import configure_execution

    _, jit, _ = configure_execution(TrainConfig())
    model = build_model(model_name, input_shape=(SIZE, SIZE, CHANNELS))
    images, labels = _data(batch, seed=1)
    if task == "train":
        model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=keras.losses.CategoricalCrossentropy(), jit_compile=jit
        )
        model.optimizer.build(model.trainable_variables)
        onehot = np.eye(2, dtype=np.float32)[labels]

        def call():
            return model.train_on_batch(images, onehot)
    else:

        def call():
            return model.predict_on_batch(images)

    call()
    call()  # the second call is the steady state
    logdir = tempfile.mkdtemp(prefix="ptx_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    call()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    return _summed(_tensorflow_op_times(logdir), top, wall * 1e3)


def profile_peer(task, batch, top):
    import torch

    from benchmarks.peer_torch import build_peer

    model = build_peer(CHANNELS)
    images, labels = _data(batch, seed=1)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def call():
        if task == "train":
            model.train()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        else:
            model.eval()
            with torch.inference_mode():
                model(images)

    call()
    call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
    times = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    return _summed(times, top, wall * 1e3)


def _cpu_ms(fn, calls=5):
    import numpy as np

    fn()
    fn()
    times = []
    for _ in range(calls):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return round(1000 * float(np.median(times)), 1)


def _forward_backward(fn, x, variables, input_gradient=True, calls=5):
    """`(forward ms, forward + backward ms)`: CPU time of `fn(x)` and of the gradient of a loss of it (with
    respect to `variables` and, if `input_gradient`, `x`: the model's first layer needs none)."""
    import tensorflow as tf

    @tf.function
    def forward(x):
        return fn(x)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *variables] if input_gradient else list(variables))

    return _cpu_ms(lambda: forward(x), calls), _cpu_ms(lambda: step(x), calls)


def profile_parts(batch):
    """The scSE block and the multi-scale convolution, each against its alternative formulation (see above)."""
    from ptx_keras.runtime import configure_process

    configure_process()
    import numpy as np
    import tensorflow as tf
    from keras import ops

    from ptx_keras.layers import MultiScaleConv2D, SCSEBlock

    rng = np.random.default_rng(0)
    lines = []
    for size in (256, 128):
        x = tf.constant(rng.normal(size=(batch, size, size, 12)).astype("float32"))
        layer = SCSEBlock()
        layer.build(x.shape)

        def literal(u, layer=layer):
            channel = layer.excite(layer.squeeze(ops.mean(u, axis=(1, 2), keepdims=True)))
            return u * layer.spatial_conv(u) + u * channel

        np.testing.assert_allclose(layer(x), literal(x), rtol=1e-5, atol=1e-5)
        for name, fn in (("SCSEBlock", layer), ("literal eqs. 2-4", literal)):
            fwd, train = _forward_backward(fn, x, layer.trainable_variables)
            lines.append(
                {
                    "part": "scse",
                    "formulation": name,
                    "shape": list(x.shape),
                    "forward_cpu_ms": fwd,
                    "forward_backward_cpu_ms": train,
                }
            )
    x = tf.constant(rng.random((batch, SIZE, SIZE, CHANNELS)).astype("float32"))
    layer = MultiScaleConv2D(16)
    layer.build(x.shape)
    largest = max(layer.kernel_sizes)

    def fused(u):
        kernels = []
        for branch in layer.branches:
            pad = (largest - branch.kernel_size[0]) // 2
            kernels.append(ops.pad(branch.kernel, [[pad, pad], [pad, pad], [0, 0], [0, 0]]))
        bias = ops.concatenate([branch.bias for branch in layer.branches], axis=0)
        return ops.conv(u, ops.concatenate(kernels, axis=-1), padding="same") + bias

    np.testing.assert_allclose(layer(x), fused(x), rtol=1e-4, atol=1e-4)
    for name, fn in (("MultiScaleConv2D (branches)", layer), (f"one {largest}x{largest} convolution", fused)):
        fwd, train = _forward_backward(fn, x, layer.trainable_variables, input_gradient=False)
        lines.append(
            {
                "part": "multiscale",
                "formulation": name,
                "shape": list(x.shape),
                "forward_cpu_ms": fwd,
                "forward_backward_cpu_ms": train,
            }
        )
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", nargs="+", default=["package", "peer"], choices=("package", "peer"))
    p.add_argument("--task", default="train", choices=("train", "infer"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--model", default="fc_densenet103", help="the package's model")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--parts", action="store_true", help="the scSE and multi-scale layers' formulations (above)")
    args = p.parse_args(argv)
    if args.parts:
        for line in profile_parts(args.batch):
            print(
                json.dumps(
                    {
                        "measurement": "part_profile",
                        **line,
                        "load_average": round(os.getloadavg()[0], 2),
                        "machine": machine(),
                    }
                ),
                flush=True,
            )
        return 0
    if len(args.framework) > 1:
        # One fresh process per framework: both models' training memory in one process (the package's BFC
        # pool keeps its peak) came to ~14.6 GiB and was killed on a 24 GiB machine.
        import subprocess

        rc = 0
        for framework in args.framework:
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--framework",
                framework,
                "--task",
                args.task,
                "--batch",
                str(args.batch),
                "--model",
                args.model,
                "--top",
                str(args.top),
            ]
            rc = rc or subprocess.run(command).returncode
        return rc
    for framework in args.framework:
        if framework == "package":
            result = profile_package(args.model, args.task, args.batch, args.top)
        else:
            result = profile_peer(args.task, args.batch, args.top)
        print(
            json.dumps(
                {
                    "measurement": "op_profile",
                    "framework": framework,
                    "model": args.model if framework == "package" else "fc_densenet103",
                    "task": args.task,
                    "batch": args.batch,
                    **result,
                    "load_average": round(os.getloadavg()[0], 2),
                    "fused_ops": os.environ.get("PTX_KERAS_FUSED_OPS", "default"),
                    "machine": machine(),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
