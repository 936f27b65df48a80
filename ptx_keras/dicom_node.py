"""An inference node for a PACS: a DICOM Storage SCP that predicts on what it receives and sends the results back.

`DicomNode(model, spool_dir, destination)` listens for C-STORE requests (pynetdicom). It accepts chest
radiographs, CR, DX (for presentation and for processing) and Secondary Capture images, in every transfer
syntax pydicom can decode here; any other SOP class is refused when the association is negotiated (no
presentation context), so the sender learns it at once. Each instance is written to `SPOOL/incoming/` and
flushed to disk (fsync of the file and of the folder) *before* the node answers "success": an instance the
sender saw acknowledged survives a crash.

A worker takes the spooled instances in arrival order, `batch_size` at a time, and predicts them with
`ptx_keras.predict.predict_paths(..., format="dicom")` (the same reading, preprocessing, model, diagnosis and
DICOM writing as `ptx-predict`), with UIDs derived from the model and each source's UIDs (`uid_seed`): the SEG,
the SR (and the Parametric Map with `uncertainty`) of one source always get the same SOP Instance UIDs, so a
re-sent or re-processed instance replaces its results in the PACS instead of duplicating them. It sends them to
the destination (`ptx_keras.dicom_net.send_files`), then writes `SPOOL/done/<id>.json` and deletes the
spooled instance. One log line per instance says what happened.

* An instance that cannot be predicted (corrupt, no pixel data, not an image) is moved to `SPOOL/failed/` with
  `<id>.error.txt` beside it, and logged; the node goes on.
* When the destination cannot be reached or refuses the results, the instances stay in `incoming/` and the
  batch is tried again after `retry_seconds` (doubling up to ten times that): nothing is lost while the PACS
  is down.
* After a crash or `kill -9`, the next start processes whatever is in `incoming/` (half-written `.part`
  files, never acknowledged, are removed).
* `stop()` (the CLI calls it on SIGTERM / SIGINT) lets the batch in hand finish, then closes the listener.

Not a medical device (the objects say "research use"). Needs the deployment extra: pynetdicom, highdicom.
"""

import hashlib
import json
import logging
import os
import shutil
import threading
import time

from ptx_keras.data.dicom import read_dicom_header
from ptx_keras.dicom_net import (
    DEFAULT_TIMEOUT,
    check_ae_title,
    parse_destination,
    send_files,
)
from ptx_keras.dicom_out import check_uid
from ptx_keras.errors import ConfigError, DataError, PtxError

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "DEFAULT_AE_TITLE",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_RETRY_SECONDS",
    "DONE",
    "FAILED",
    "INCOMING",
    "PART_SUFFIX",
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "STATUS_SUCCESS",
    "WORK",
    "DicomNode",
    "spool_name",
    "transfer_syntaxes",
]


logger = logging.getLogger(__name__)

ACCEPTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
INCOMING, FAILED, DONE, WORK = "incoming", "failed", "done", "work"
PART_SUFFIX = ".part"
DEFAULT_PORT = 11112
DEFAULT_AE_TITLE = "PTX"
DEFAULT_BATCH_SIZE = 4
DEFAULT_RETRY_SECONDS = 5.0
# C-STORE statuses (PS3.4 Annex B): refused, out of resources / cannot understand.
STATUS_SUCCESS, STATUS_OUT_OF_RESOURCES, STATUS_SOP_CLASS_NOT_SUPPORTED, STATUS_CANNOT_UNDERSTAND = (
    0x0000,
    0xA700,
    0x0122,
    0xC000,
)


def spool_name(sop_instance_uid):
    """The spool file stem of an instance: its SOP Instance UID when that is a valid UID, else `x` + a hash.

    Header values never name files unchecked: a valid UID has only digits and dots.
    """
    try:
        return check_uid(sop_instance_uid)
    except DataError:
        return "x" + hashlib.sha256(str(sop_instance_uid).encode("utf-8", "replace")).hexdigest()[:40]


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path, data):
    """Writes `data` to `path` so that it is on disk when this returns: a `.part` file, fsync, rename, fsync dir."""
    part = path + PART_SUFFIX
    with open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
    _fsync_dir(os.path.dirname(path))


def transfer_syntaxes():
    """The transfer syntaxes the node accepts: those whose pixel data pydicom can decode here."""
    from pydicom import uid
    from pydicom.pixels import get_decoder

    candidates = [
        uid.ExplicitVRLittleEndian,
        uid.ImplicitVRLittleEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.RLELossless,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
    ]
    out = []
    for syntax in candidates:
        try:
            if (
                syntax in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian)
                or get_decoder(syntax).is_available
            ):
                out.append(syntax)
        except (NotImplementedError, ValueError):
            continue
    return out


class DicomNode:
    """A DICOM Storage SCP that predicts on received radiographs and stores the results in a PACS.

    Args:
        model: A run directory or an exported model (`ptx_keras.predict.load_predictor`), or a `Predictor`.
        spool_dir: The node's folder (`incoming/`, `failed/`, `done/`, `work/` are made in it).
        destination: Where the SEG / SR / Parametric Map go: `AE@HOST:PORT` or a DICOMweb URL
            (`ptx_keras.dicom_net.parse_destination`).
        ae_title: The node's AE title: what senders call, and what it calls the destination with.
        host: The address to listen on (default 127.0.0.1; 0.0.0.0 for every interface).
        port: The DICOM port to listen on (0: any free one, see `port` after `start`).
        batch_size: Instances predicted together (the model call's batch).
        uncertainty: None or `"mc_dropout"` / `"tta"`: also a Parametric Map of the per-pixel uncertainty.
        samples: Samples for `uncertainty` (default: `ptx_keras.predict.DEFAULT_SAMPLES`).
        timeout: Seconds for the network (sending, and the listener's association and DIMSE timeouts).
        retry_seconds: The first wait before a batch whose results could not be sent is tried again.

    Raises:
        ConfigError: for an invalid destination, AE title, port, batch size or retry time.
        ModelError: if the model cannot be loaded.
        OutputError: if the spool folder cannot be written.
    """

    def __init__(
        self,
        model,
        spool_dir,
        destination,
        *,
        ae_title=DEFAULT_AE_TITLE,
        host="127.0.0.1",
        port=DEFAULT_PORT,
        batch_size=DEFAULT_BATCH_SIZE,
        uncertainty=None,
        samples=None,
        timeout=DEFAULT_TIMEOUT,
        retry_seconds=DEFAULT_RETRY_SECONDS,
    ):
        from ptx_keras.errors import writable_dir
        from ptx_keras.predict import Predictor, load_predictor

        self.destination = parse_destination(destination)
        self.ae_title = check_ae_title(ae_title, "The node's AE title")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be an integer in 0..65535. Received: port={port!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
        if not retry_seconds > 0:
            raise ConfigError(f"retry_seconds must be positive. Received: retry_seconds={retry_seconds!r}")
        self.host, self.port, self.batch_size = host, port, batch_size
        self.uncertainty, self.samples = uncertainty, samples
        self.timeout, self.retry_seconds = float(timeout), float(retry_seconds)
        self.spool_dir = writable_dir(spool_dir, "node spool directory")
        self.dirs = {name: os.path.join(self.spool_dir, name) for name in (INCOMING, FAILED, DONE, WORK)}
        for path in self.dirs.values():
            os.makedirs(path, exist_ok=True)
        self.predictor = model if isinstance(model, Predictor) else load_predictor(model)
        # The UIDs of the results depend on the model and its thresholds: another model gives other objects.
        self.uid_seed = json.dumps(self.predictor.describe(), sort_keys=True, default=str)
        self.counts = {"received": 0, "done": 0, "failed": 0, "send_errors": 0}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._server = None
        self._clean_parts()

    # -----------------------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------------------
    def _clean_parts(self):
        incoming = self.dirs[INCOMING]
        for name in os.listdir(incoming):
            if name.endswith(PART_SUFFIX):  # a transfer cut short: never acknowledged, the sender still has it
                os.remove(os.path.join(incoming, name))
                logger.info("removed %s: a reception cut short (never acknowledged)", name)

    def _on_store(self, event):
        """C-STORE handler: spools the instance durably, then answers. Never raises (pynetdicom would abort)."""
        try:
            sop_class = str(event.request.AffectedSOPClassUID)
            uid = event.request.AffectedSOPInstanceUID
            calling = event.assoc.requestor.ae_title
            if sop_class not in ACCEPTED_SOP_CLASSES:  # the presentation contexts refuse these already
                logger.warning("%s from %s refused: SOP class %s is not a radiograph", uid, calling, sop_class)
                return STATUS_SOP_CLASS_NOT_SUPPORTED
            path = os.path.join(self.dirs[INCOMING], spool_name(uid) + ".dcm")
            _write_durably(path, event.encoded_dataset())  # the bytes as received, not decoded
            self.counts["received"] += 1
            logger.info("%s received from %s (%s), spooled", uid, calling, ACCEPTED_SOP_CLASSES[sop_class])
            self._wake.set()
            return STATUS_SUCCESS
        except OSError as e:
            logger.error("cannot spool an instance (%s): answered 'out of resources'", e)
            return STATUS_OUT_OF_RESOURCES
        except Exception as e:  # noqa: BLE001 - a bad request must not take the node down
            logger.error("cannot take an instance (%s: %s): answered 'cannot understand'", type(e).__name__, e)
            return STATUS_CANNOT_UNDERSTAND

    def warm_up(self):
        """Runs the model once on a full batch and on one image of zeros, so that the first instances received do
        not wait for TensorFlow to trace and compile the model (tens of seconds for the paper's model)."""
        import numpy as np

        runner = self.predictor.runner_for(None)
        shape = (self.predictor.image_size, self.predictor.image_size, self.predictor.channels)
        for n in sorted({1, self.batch_size}):
            runner(np.zeros((n, *shape), np.float32))

    def start(self):
        """Warms the model up and starts listening (in a background thread). Returns the port listened on."""
        from pynetdicom import AE, evt

        started = time.perf_counter()
        self.warm_up()
        logger.info("model warmed up in %.1f s", time.perf_counter() - started)

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_associations = 8
        syntaxes = transfer_syntaxes()
        for sop_class in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, syntaxes)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification (C-ECHO), for the PACS's "test" button
        self._ae = ae
        try:
            self._server = ae.start_server(
                (self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
            )
        except OSError as e:
            raise ConfigError(
                f"Cannot listen on {self.host}:{self.port} ({e.strerror or e}); choose another --port or --host"
            ) from None
        self.port = self._server.server_address[1]
        logger.info(
            "%s listening on %s:%d (%s), results to %s; spool %s",
            self.ae_title,
            self.host,
            self.port,
            ", ".join(ACCEPTED_SOP_CLASSES.values()),
            self.destination,
            self.spool_dir,
        )
        return self.port

    def stop(self):
        """Asks the node to stop after the batch in hand (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def shutdown(self):
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -----------------------------------------------------------------------------------------------------
    # Processing
    # -----------------------------------------------------------------------------------------------------
    def pending(self):
        """The spooled instances not processed yet, oldest first."""
        folder = self.dirs[INCOMING]
        names = [n for n in os.listdir(folder) if n.endswith(".dcm")]
        return sorted((os.path.join(folder, n) for n in names), key=lambda p: (os.path.getmtime(p), p))

    def serve(self, idle_exit=None):
        """Processes spooled instances until `stop()` (or, with `idle_exit` seconds, once idle that long).

        Returns:
            The counts: received, done, failed, send_errors.
        """
        backoff, idle_since = self.retry_seconds, time.monotonic()
        while not self._stop.is_set():
            batch = self.pending()[: self.batch_size]
            if not batch:
                if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            idle_since = time.monotonic()
            if self.process(batch):
                backoff = self.retry_seconds
            else:  # not sent: wait, unless asked to stop
                self._stop.wait(backoff)
                backoff = min(2 * backoff, 10 * self.retry_seconds)
        logger.info("stopping: %s", ", ".join(f"{k} {v}" for k, v in self.counts.items()))
        return dict(self.counts)

    def process(self, batch):
        """Predicts, sends and retires one batch of spooled files.

        Returns:
            False when the results could not be sent (the batch stays in `incoming/`), else True.
        """
        import pandas as pd

        from ptx_keras.predict import predict_paths

        work = os.path.join(self.dirs[WORK], f"batch-{os.getpid()}-{time.monotonic_ns()}")
        started = time.perf_counter()
        try:
            summary = predict_paths(
                batch,
                self.predictor,
                work,
                format="dicom",
                batch_size=len(batch),
                overlays=False,
                progress=False,
                uncertainty=self.uncertainty,
                samples=self.samples,
                dicom_uid_seed=self.uid_seed,
            )
            rows = pd.read_csv(summary["predictions"], keep_default_na=False).to_dict("records")
        except PtxError as e:
            shutil.rmtree(work, ignore_errors=True)
            if len(batch) > 1:  # e.g. no file of the batch is DICOM: find the bad ones one at a time
                results = [self.process([path]) for path in batch]  # every file, even after a False
                return all(results)
            self._fail(batch[0], str(e))
            return True
        except Exception as e:
            logger.exception("prediction failed for %d instance(s)", len(batch))
            shutil.rmtree(work, ignore_errors=True)
            for path in batch:
                self._fail(path, f"prediction failed: {type(e).__name__}: {e}")
            return True
        good, outputs = [], []
        for row in rows:
            if row["status"] != "ok" or not row.get("dicom_seg"):
                self._fail(row["file"], row["error"] or "not a DICOM image: no DICOM output")
                continue
            files = [os.path.join(work, row[k]) for k in ("dicom_seg", "dicom_sr", "dicom_pm") if row.get(k)]
            good.append((row, files))
            outputs.extend(files)
        try:
            send_files(outputs, self.destination, calling_ae=self.ae_title, timeout=self.timeout)
        except PtxError as e:
            self.counts["send_errors"] += 1
            logger.error("%d instance(s) kept in %s for another try: %s", len(good), self.dirs[INCOMING], e)
            shutil.rmtree(work, ignore_errors=True)
            return False
        seconds = time.perf_counter() - started
        for row, files in good:
            self._done(row, files, len(rows), seconds)
        shutil.rmtree(work, ignore_errors=True)
        return True

    def _done(self, row, files, batch, seconds):
        name = os.path.splitext(os.path.basename(row["file"]))[0]
        record = {
            "source": name,
            "diagnosis": int(row["diagnosis"]),
            "score": float(row["score"]),
            "destination": str(self.destination),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "results": {},
        }
        for path in files:
            ds = read_dicom_header(path, tags=["SOPInstanceUID", "Modality"])
            record["results"][str(ds.Modality)] = str(ds.SOPInstanceUID)
        _write_durably(os.path.join(self.dirs[DONE], name + ".json"), json.dumps(record, indent=1).encode())
        os.remove(row["file"])
        self.counts["done"] += 1
        logger.info(
            "%s done: %s (score %.2f), %s sent to %s (batch of %d, %.1f s)",
            name,
            "pneumothorax" if record["diagnosis"] else "no pneumothorax",
            record["score"],
            "+".join(record["results"]),
            self.destination,
            batch,
            seconds,
        )

    def _fail(self, path, error):
        name = os.path.basename(path)
        target = os.path.join(self.dirs[FAILED], name)
        try:
            os.replace(path, target)
            _write_durably(os.path.splitext(target)[0] + ".error.txt", (error.strip() + "\n").encode())
        except OSError as e:
            logger.error("%s: cannot move to %s (%s)", path, self.dirs[FAILED], e)
        self.counts["failed"] += 1
        logger.warning("%s failed, moved to %s: %s", os.path.splitext(name)[0], self.dirs[FAILED], error)
