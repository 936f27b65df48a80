"""A real PACS (Orthanc, started here on 127.0.0.1) and the DICOM network: `ptx-predict --send` by C-STORE and
STOW-RS with its failures, and the inference node `ptx-dicom-node` receiving from Orthanc, answering with a SEG and
an SR per image equal to `ptx-predict`'s, refusing what is not a radiograph, keeping failures, and losing or
duplicating nothing across a kill -9 and a re-send. No mock of the network: Orthanc is the Debian package
(`orthanc`, `orthanc-dicomweb`; `.ci/run` installs them)."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pydicom
import pytest

pytestmark = pytest.mark.slow

ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")  # /usr/sbin: not on every PATH
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ORTHANC_AET, NODE_AET = "ORTHANC", "PTX"
SIZE = 32  # the tiny model's input side
SEG_CLASS, SR_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.33"
# What the phantoms cover: photometric interpretation, stored bits, transfer syntax (SIIM-ACR layout).
EXPORTS = [
    ("MONOCHROME1", 12, "rle"),
    ("MONOCHROME2", 8, "jpeg"),
    ("MONOCHROME2", 16, "deflate"),
    ("MONOCHROME1", 16, "explicit"),
    ("MONOCHROME2", 12, "explicit"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_config(folder, http_port, dicom_port):
    """The Orthanc configuration the tests run (docs/deployment.md quotes it)."""
    return {
        "Name": "ptx-keras-test",
        "StorageDirectory": os.path.join(folder, "storage"),
        "IndexDirectory": os.path.join(folder, "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False,  # HTTP from this machine only
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,  # a C-STORE to another AE title is rejected
        "DicomAlwaysAllowStore": False,  # only known modalities (below) may store
        "OverwriteInstances": True,  # a re-sent SOP Instance UID replaces the stored one
        "StorageCompression": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        # The inference node: its AE title calls Orthanc to store results and is called with images.
        "DicomModalities": {"ptx": [NODE_AET, "127.0.0.1", 11112]},
    }


class Orthanc:
    def __init__(self, folder):
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config = orthanc_config(folder, self.http_port, self.dicom_port)
        path = os.path.join(folder, "orthanc.json")
        with open(path, "w") as f:
            json.dump(self.config, f, indent=1)
        self.log = open(os.path.join(folder, "orthanc.log"), "wb")  # noqa: SIM115 - open while Orthanc runs
        self.process = subprocess.Popen([ORTHANC, path], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/system")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start; see {self.log.name}") from None
                time.sleep(0.2)

    def request(self, method, path, body=None, content_type="application/json", timeout=120):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type} if data is not None else {},
        )
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw

    def get(self, path):
        return self.request("GET", path)

    def upload(self, path):
        with open(path, "rb") as f:
            return self.request("POST", "/instances", f.read(), "application/dicom")["ID"]

    def datasets(self, sop_class):
        """Every stored instance of a SOP class, as pydicom datasets."""
        found = self.request("POST", "/tools/find", {"Level": "Instance", "Query": {"SOPClassUID": sop_class}})
        return [pydicom.dcmread(io.BytesIO(self.get(f"/instances/{i}/file"))) for i in found]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if ORTHANC is None or not os.path.exists(DICOMWEB_PLUGIN):
        pytest.skip("Orthanc is not installed (Debian packages orthanc and orthanc-dicomweb; .ci/run installs them)")
    server = Orthanc(str(tmp_path_factory.mktemp("orthanc")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run whose model calls bright pixels pneumothorax (a 1x1 convolution and a softmax)."""
    import keras

    from ptx_keras.config import load_config, save_config

    run = str(tmp_path_factory.mktemp("run"))
    save_config(
        load_config(extra={"model": {"name": "bright_1x1"}, "data": {"image_size": SIZE, "channels": 1}}),
        os.path.join(run, "config.yaml"),
    )
    conv = keras.layers.Conv2D(2, 1)
    inp = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(inp, keras.layers.Softmax()(conv(inp)), name="bright_1x1")
    conv.set_weights([np.array([[[[-8.0, 8.0]]]], np.float32), np.array([4.0, -4.0], np.float32)])
    model.save(os.path.join(run, "best.keras"))
    return run


def siim_phantoms(root, seed, n=5):
    """SIIM-ACR-layout phantom DICOMs, one per export in `EXPORTS` (cycled), half of them positive."""
    from ptx_keras.data.phantoms.generate import render_phantom
    from ptx_keras.data.phantoms.siim import uid, write_siim_sample

    paths = []
    for i in range(n):
        export = EXPORTS[i % len(EXPORTS)]
        sid = f"node_{seed}_{i}"
        image, mask, _, _ = render_phantom(
            48,
            np.random.default_rng([seed, i]),
            positive=i % 2 == 0,
            seed=None,
            bits=export[1],
            conspicuity=2.0,
            style="varied",
        )
        write_siim_sample(root, sid, image, mask, seed, export, "varied")
        study, series, image_id = (uid(k, seed, sid, "varied") for k in ("study", "series", "image"))
        paths.append(os.path.join(root, "dicom-images-train", study, series, f"{image_id}.dcm"))
    return paths


class Node:
    """`ptx-dicom-node` as a subprocess, as an operator runs it."""

    def __init__(self, run, spool, orthanc, port, batch_size=2):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.log_path = os.path.join(spool + ".log")
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - open while the node runs
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ptx_keras.cli.dicom_node",
                "--model",
                run,
                "--port",
                str(port),
                "--ae-title",
                NODE_AET,
                "--destination",
                f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}",
                "--spool",
                spool,
                "--batch-size",
                str(batch_size),
                "--retry",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.wait_for("ready on port", 180)

    def text(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, needle, seconds):
        deadline = time.monotonic() + seconds
        while needle not in self.text():
            if self.process.poll() is not None:
                raise AssertionError(f"the node exited ({self.process.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} from the node within {seconds} s:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def terminate(self):
        self.process.send_signal(signal.SIGTERM)
        rc = self.process.wait(120)
        self.log.close()
        return rc

    def kill(self):
        self.process.kill()  # SIGKILL: no chance to clean up
        self.process.wait()
        self.log.close()


def referenced_uids(ds):
    """Every ReferencedSOPInstanceUID in a data set, at any depth."""
    found = set()
    for elem in ds.iterall():
        if elem.keyword == "ReferencedSOPInstanceUID":
            found.add(str(elem.value))
    return found


def referencing(datasets, source_uid):
    return [ds for ds in datasets if source_uid in referenced_uids(ds)]


def wait_for_results(orthanc, source_uids, seconds=240):
    """Polls Orthanc until every source has a SEG and an SR referencing it; returns `{uid: (segs, srs)}`."""
    deadline = time.monotonic() + seconds
    while True:
        segs, srs = orthanc.datasets(SEG_CLASS), orthanc.datasets(SR_CLASS)
        found = {u: (referencing(segs, u), referencing(srs, u)) for u in source_uids}
        if all(a and b for a, b in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def store_to_node(orthanc, ids, port):
    """Registers the node in Orthanc (as an operator would, by REST) and asks Orthanc to send `ids` to it."""
    orthanc.request("PUT", "/modalities/ptx", {"AET": NODE_AET, "Host": "127.0.0.1", "Port": port})
    return orthanc.request("POST", "/modalities/ptx/store", {"Resources": ids, "Synchronous": True})


def test_orthanc_sends_to_the_node_and_gets_a_seg_and_sr_per_image(orthanc, tiny_run, tmp_path):
    from ptx_keras.predict import predict_paths

    sources = siim_phantoms(str(tmp_path / "siim"), seed=1)
    for path, (sop_class, modality) in zip(
        sources[1:3],
        [
            ("1.2.840.10008.5.1.4.1.1.1", "CR"),  # CR and DX too
            ("1.2.840.10008.5.1.4.1.1.1.1", "DX"),
        ],
    ):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.Modality = modality
        ds.save_as(path)
    uids = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in sources}
    ids = [orthanc.upload(p) for p in sources]
    # An MR image (not a radiograph) and a radiograph without pixel data.
    mr = pydicom.dcmread(sources[0])
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    mr.save_as(tmp_path / "mr.dcm")
    empty = pydicom.dcmread(sources[3])
    del empty.PixelData
    empty.SOPInstanceUID = empty.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    empty.save_as(tmp_path / "empty.dcm")

    port, spool = free_port(), str(tmp_path / "spool")
    node = Node(tiny_run, spool, orthanc, port)
    try:
        store_to_node(orthanc, ids + [orthanc.upload(tmp_path / "empty.dcm")], port)
        with pytest.raises(urllib.error.HTTPError):  # Orthanc reports the refused SOP class
            store_to_node(orthanc, [orthanc.upload(tmp_path / "mr.dcm")], port)
        found = wait_for_results(orthanc, uids)
        node.wait_for(f"{empty.SOPInstanceUID} failed", 60)
    finally:
        rc = node.terminate()
    assert rc == 0, node.text()[-3000:]

    expected = predict_paths(
        sources, tiny_run, str(tmp_path / "predict"), format="dicom", overlays=False, progress=False
    )
    assert expected["n_ok"] == len(sources)
    by_uid = {}
    for name in os.listdir(expected["dicom_dir"]):
        if name.endswith("_seg.dcm"):
            seg = pydicom.dcmread(os.path.join(expected["dicom_dir"], name))
            by_uid[seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID] = seg
    for uid, (segs, srs) in found.items():
        assert len(segs) == 1 and len(srs) == 1, uid
        np.testing.assert_array_equal(segs[0].pixel_array, by_uid[uid].pixel_array, err_msg=uids[uid])
        assert segs[0].StudyInstanceUID == pydicom.dcmread(uids[uid]).StudyInstanceUID
        assert srs[0].ContentSequence  # the TID 1500 report
    log = node.text()
    assert all(f"{uid} done:" in log for uid in uids)
    assert os.listdir(os.path.join(spool, "incoming")) == []
    assert sorted(os.listdir(os.path.join(spool, "done"))) == sorted(f"{u}.json" for u in uids)
    assert sorted(os.listdir(os.path.join(spool, "failed"))) == sorted(
        [f"{empty.SOPInstanceUID}.dcm", f"{empty.SOPInstanceUID}.error.txt"]
    )
    assert "no pixel data" in (tmp_path / "spool" / "failed" / f"{empty.SOPInstanceUID}.error.txt").read_text().lower()
    assert not referencing(orthanc.datasets(SEG_CLASS), str(mr.SOPInstanceUID))


def test_kill_mid_study_then_restart_and_resend_gives_exactly_one_result_set(orthanc, tiny_run, tmp_path):
    sources = siim_phantoms(str(tmp_path / "siim"), seed=2, n=6)
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in sources]
    ids = [orthanc.upload(p) for p in sources]
    port, spool = free_port(), str(tmp_path / "spool")
    node = Node(tiny_run, spool, orthanc, port, batch_size=1)
    store_to_node(orthanc, ids, port)  # every instance spooled and acknowledged
    node.wait_for(" done: ", 120)
    node.kill()  # mid-study: some results sent, the rest spooled only
    left = os.listdir(os.path.join(spool, "incoming"))
    assert 0 < len(left) < len(sources), "the kill should land mid-study"
    node = Node(tiny_run, spool, orthanc, port, batch_size=1)
    try:
        found = wait_for_results(orthanc, uids)
        # The PACS sends the whole study again: the results replace the stored ones (same UIDs).
        store_to_node(orthanc, ids, port)
        deadline = time.monotonic() + 120
        while os.listdir(os.path.join(spool, "incoming")) and time.monotonic() < deadline:
            time.sleep(0.5)
        found = wait_for_results(orthanc, uids)
    finally:
        assert node.terminate() == 0
    assert os.listdir(os.path.join(spool, "incoming")) == []
    for uid, (segs, srs) in found.items():
        assert (len(segs), len(srs)) == (1, 1), uid


def test_predict_send_c_store_stow_and_failures(orthanc, tiny_run, tmp_path, capsys):
    from ptx_keras.cli.predict import main
    from ptx_keras.dicom_net import SendError, send_files

    sources = siim_phantoms(str(tmp_path / "siim"), seed=3, n=2)
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in sources]
    base = [sources[0], "--model", tiny_run, "--format", "dicom", "--no-progress"]
    assert (
        main(base + ["--output", str(tmp_path / "a"), "--send", f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}"]) == 0
    )
    assert "sent 2 DICOM object(s)" in capsys.readouterr().out
    assert main([sources[1]] + base[1:] + ["--output", str(tmp_path / "b"), "--send", f"{orthanc.url}/dicom-web"]) == 0
    found = wait_for_results(orthanc, uids, seconds=30)
    assert all((len(a), len(b)) == (1, 1) for a, b in found.values())

    # The PACS is down: one line, exit status 2, the objects stay on disk.
    out = tmp_path / "c"
    assert main(base + ["--output", str(out), "--send", f"{ORTHANC_AET}@127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "2 file(s) not sent, kept on disk" in err and err.count("\n") == 1, err
    written = sorted(str(p) for p in (out / "dicom").iterdir())
    assert len(written) == 2
    for send, calling, message in [
        (f"WRONG@127.0.0.1:{orthanc.dicom_port}", "PTX", "association was rejected"),  # unknown called AE
        (f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}", "STRANGER", "does it accept calling AE title STRANGER"),
        (f"http://127.0.0.1:{free_port()}/dicom-web", "PTX", "ConnectionError"),  # DICOMweb server down
        (f"{orthanc.url}/no-dicom-web", "PTX", "404"),
    ]:
        with pytest.raises(SendError, match=message) as error:
            send_files(written, send, calling_ae=calling)
        assert "kept on disk" in str(error.value)
    assert main(base + ["--format", "csv", "--send", "X@h:1"]) == 2
    assert "add --format dicom" in capsys.readouterr().err
    # A PACS that accepts the connection but never answers: a timeout, not a hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(SendError, match="aborted|no answer"):
            send_files(written, f"{ORTHANC_AET}@127.0.0.1:{silent.getsockname()[1]}", timeout=2)
        assert time.monotonic() - started < 20
