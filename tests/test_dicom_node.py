"""The DICOM network's pieces without a PACS: destinations and AE titles, spool names from header values, the node's
argument checks, its durable spooling and its handling of bad instances (tests/test_pacs.py runs it against
Orthanc)."""

import os

import numpy as np
import pytest

from ptx_keras.errors import ConfigError

SIZE = 16


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ORTHANC@127.0.0.1:4242", ("dimse", "ORTHANC", "127.0.0.1", 4242, "")),
        ("MY PACS@pacs.example.org:104", ("dimse", "MY PACS", "pacs.example.org", 104, "")),
        ("http://127.0.0.1:8042/dicom-web/", ("dicomweb", "", "", 0, "http://127.0.0.1:8042/dicom-web")),
    ],
)
def test_parse_destination(text, expected):
    from ptx_keras.dicom_net import parse_destination

    d = parse_destination(text)
    assert (d.kind, d.ae_title, d.host, d.port, d.url) == expected
    assert str(d) == text.rstrip("/")


@pytest.mark.parametrize(
    "text, message",
    [
        ("ORTHANC@127.0.0.1", "neither form"),
        ("127.0.0.1:4242", "neither form"),
        ("A" * 17 + "@h:1", "1 to 16 printable ASCII"),
        ("A\\B@h:1", "1 to 16 printable ASCII"),
        ("X@h:70000", "not in 1..65535"),
        ("http:///dicom-web", "has no host"),
    ],
)
def test_parse_destination_refuses(text, message):
    from ptx_keras.dicom_net import parse_destination

    with pytest.raises(ConfigError, match=message):
        parse_destination(text)


def test_send_files_refuses_an_unreadable_file_before_connecting(tmp_path):
    """The header reader's `DataError` comes back as a `SendError` naming the file; nothing is contacted."""
    from ptx_keras.dicom_net import SendError, send_files

    (tmp_path / "bad.dcm").write_bytes(b"not DICOM")
    with pytest.raises(SendError, match=r"Cannot send .*bad\.dcm: not a DICOM file"):
        send_files([str(tmp_path / "bad.dcm")], "PACS@127.0.0.1:9")


def test_spool_names_never_come_from_raw_header_values():
    from ptx_keras.dicom_node import spool_name

    assert spool_name("1.2.840.113619.2.1") == "1.2.840.113619.2.1"
    for bad in ("../../etc/passwd", "1.2\\1.3", "1.02.3", "", None, "a" * 300):
        name = spool_name(bad)
        assert name.startswith("x") and len(name) == 41 and name[1:].isalnum(), name
    assert spool_name("../a") != spool_name("../b")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A run with a 1x1 convolution (what it predicts does not matter here)."""
    import keras

    from ptx_keras.config import load_config, save_config

    run = str(tmp_path_factory.mktemp("run"))
    save_config(
        load_config(extra={"model": {"name": "conv_1x1"}, "data": {"image_size": SIZE, "channels": 1}}),
        os.path.join(run, "config.yaml"),
    )
    inp = keras.Input((SIZE, SIZE, 1))
    keras.Model(inp, keras.layers.Conv2D(2, 1, activation="softmax")(inp), name="conv_1x1").save(
        os.path.join(run, "best.keras")
    )
    return run


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"destination": "nowhere"}, "neither form"),
        ({"ae_title": ""}, "AE title must be 1 to 16"),
        ({"port": -1}, "port must be an integer in 0..65535"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"retry_seconds": 0}, "retry_seconds must be positive"),
    ],
)
def test_node_invalid_arguments(tiny_model, tmp_path, kwargs, message):
    from ptx_keras.dicom_node import DicomNode

    args = {"destination": "PACS@127.0.0.1:104", **kwargs}
    with pytest.raises(ConfigError, match=message):
        DicomNode(tiny_model, tmp_path / "spool", args.pop("destination"), **args)


def test_spooling_is_durable_and_bad_instances_go_to_failed(tiny_model, tmp_path):
    """A half-written `.part` file (a reception cut short) is removed at start; a spooled file that is no image
    goes to failed/ with its reason and the node goes on; an unreachable destination keeps the good ones
    spooled (tried again later), never deleting them."""
    from ptx_keras.data.dicom import write_dicom
    from ptx_keras.dicom_node import DicomNode

    spool = tmp_path / "spool"
    (spool / "incoming").mkdir(parents=True)
    (spool / "incoming" / "1.2.3.dcm.part").write_bytes(b"half")
    (spool / "incoming" / "1.2.4.dcm").write_bytes(b"not a DICOM file")
    write_dicom(str(spool / "incoming" / "1.2.5.dcm"), np.full((20, 20), 7, np.uint8))
    # nothing listens on port 9 of this machine: sending fails at once
    node = DicomNode(tiny_model, spool, "PACS@127.0.0.1:9", batch_size=4, timeout=2)
    assert not (spool / "incoming" / "1.2.3.dcm.part").exists()
    assert [os.path.basename(p) for p in node.pending()] == ["1.2.4.dcm", "1.2.5.dcm"]
    assert node.process(node.pending()) is False  # not sent: kept
    assert sorted(os.listdir(spool / "failed")) == ["1.2.4.dcm", "1.2.4.error.txt"]
    assert "not" in (spool / "failed" / "1.2.4.error.txt").read_text()
    assert os.listdir(spool / "incoming") == ["1.2.5.dcm"] and os.listdir(spool / "done") == []
    assert node.counts == {"received": 0, "done": 0, "failed": 1, "send_errors": 1}
    assert os.listdir(spool / "work") == []


def test_stop_finishes_the_batch_in_hand(tiny_model, tmp_path):
    """`stop()` during a batch (SIGTERM in the CLI): that batch is predicted, sent and retired, the others stay
    spooled for the next start. The destination is a real Storage SCP (pynetdicom) on a free port."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ComprehensiveSRStorage, SegmentationStorage

    from ptx_keras.data.dicom import write_dicom
    from ptx_keras.dicom_node import DicomNode

    received = []
    dest = AE(ae_title="DEST")
    for sop_class in (SegmentationStorage, ComprehensiveSRStorage):
        dest.add_supported_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = dest.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[
            (evt.EVT_C_STORE, lambda event: received.append(str(event.request.AffectedSOPClassUID)) or 0x0000)
        ],
    )
    try:
        spool = tmp_path / "spool"
        for i in range(3):
            write_dicom(
                str(spool / "incoming" / f"1.2.{i}.dcm"),
                np.full((20, 20), 40 * i, np.uint8),
                sop_instance_uid=f"1.2.{i}",
            )
        node = DicomNode(tiny_model, spool, f"DEST@127.0.0.1:{server.server_address[1]}", batch_size=2)
        process = node.process

        def stop_during_the_batch(batch):
            node.stop()  # as the SIGTERM handler does, while the batch is in hand
            return process(batch)

        node.process = stop_during_the_batch
        counts = node.serve()
    finally:
        server.shutdown()
    assert counts["done"] == 2 and counts["failed"] == 0
    assert sorted(os.listdir(spool / "done")) == ["1.2.0.json", "1.2.1.json"]
    assert os.listdir(spool / "incoming") == ["1.2.2.dcm"]
    assert sorted(received) == sorted([SegmentationStorage, ComprehensiveSRStorage] * 2)
