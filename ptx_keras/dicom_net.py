"""Sending DICOM files to a PACS: C-STORE (DIMSE, pynetdicom) or STOW-RS (DICOMweb, dicomweb-client).

A destination is written `AE@HOST:PORT` (a DICOM node: its called AE title, host and port) or
`http(s)://HOST:PORT/PATH` (the DICOMweb root, e.g. Orthanc's `http://127.0.0.1:8042/dicom-web`).
`send_files(paths, destination)` stores every file or raises `SendError` naming the destination and what
failed (association refused, e.g. an unknown called or calling AE title; nothing listening; a timeout; a
refused instance). The files are only read: whatever happens, they stay on disk.

Used by `ptx-predict --send` and the inference node (`ptx_keras.dicom_node`); both need the deployment extra
(`pip install "ptx_keras[deploy]"`: pynetdicom, dicomweb-client).
"""

import dataclasses
import logging
import os
import re

from ptx_keras.data.dicom import read_dicom_header
from ptx_keras.errors import ConfigError, DataError, PtxError

__all__ = [
    "DEFAULT_CALLING_AE",
    "DEFAULT_TIMEOUT",
    "Destination",
    "SendError",
    "check_ae_title",
    "parse_destination",
    "send_files",
]


logger = logging.getLogger(__name__)

DEFAULT_CALLING_AE = "PTX"
DEFAULT_TIMEOUT = 30.0  # seconds: connection, association and each response
_AE_RE = re.compile(r"[ -\[\]-~]{1,16}")  # AE titles: 16 printable ASCII characters except backslash
_INSTALL_HINT = 'install the deployment extra: pip install "ptx_keras[deploy]"'


class SendError(PtxError, OSError):
    """Results could not be stored in the destination (the files stay on disk)."""


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM node (`kind="dimse"`: `ae_title`, `host`, `port`) or a DICOMweb root
    (`kind="dicomweb"`: `url`)."""

    kind: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    def __str__(self):
        return self.url if self.kind == "dicomweb" else f"{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(value, what="AE title"):
    """`value` stripped, if it is a valid AE title (1-16 printable ASCII characters, no backslash).

    Raises:
        ConfigError: naming `what` and the value.
    """
    text = str(value).strip()
    if not _AE_RE.fullmatch(text):
        raise ConfigError(f"{what} must be 1 to 16 printable ASCII characters without a backslash. Received: {value!r}")
    return text


def parse_destination(text):
    """Parses `AE@HOST:PORT` or `http(s)://HOST[:PORT]/PATH` into a `Destination`.

    Raises:
        ConfigError: for anything else, with both forms in the message.
    """
    text = str(text).strip()
    forms = "AE@HOST:PORT (DICOM C-STORE) or http://HOST:PORT/dicom-web (DICOMweb STOW-RS)"
    if re.match(r"https?://", text):
        from urllib.parse import urlsplit

        parts = urlsplit(text)
        if not parts.hostname:
            raise ConfigError(f"Destination {text!r} has no host; use {forms}")
        return Destination("dicomweb", url=text.rstrip("/"))
    match = re.fullmatch(r"(.+)@([^@:\s]+):(\d+)", text)
    if not match:
        raise ConfigError(f"Destination {text!r} is neither form; use {forms}")
    port = int(match.group(3))
    if not 1 <= port <= 65535:
        raise ConfigError(f"Destination {text!r}: port {port} is not in 1..65535")
    return Destination(
        "dimse",
        ae_title=check_ae_title(match.group(1), f"The AE title of destination {text!r}"),
        host=match.group(2),
        port=port,
    )


def send_files(paths, destination, *, calling_ae=DEFAULT_CALLING_AE, timeout=DEFAULT_TIMEOUT):
    """Stores DICOM files in a destination: all of them, or a `SendError`.

    Args:
        paths: DICOM files (Part 10), e.g. the SEG, SR and Parametric Map `ptx-predict --format dicom` wrote.
        destination: A `Destination` or its text (`parse_destination`).
        calling_ae: This side's AE title (C-STORE only): the PACS must know it when it checks callers.
        timeout: Seconds allowed for connecting, for the association and for each answer.

    Returns:
        The number of instances stored.

    Raises:
        ConfigError: for an invalid destination or calling AE title.
        SendError: when the destination refuses or cannot be reached, or does not store an instance; the
            message names the destination, the file and the reason.
        ModelError: when pynetdicom / dicomweb-client is not installed.
    """
    if not isinstance(destination, Destination):
        destination = parse_destination(destination)
    paths = [os.fspath(p) for p in paths]
    if not paths:
        return 0
    if destination.kind == "dicomweb":
        return _stow(paths, destination, timeout)
    return _c_store(paths, destination, check_ae_title(calling_ae, "The calling AE title"), timeout)


def _read(path):
    """The whole data set of `path`, to send; an unreadable file is a `SendError` (`DataError` names the file)."""
    try:
        return read_dicom_header(path, pixel_data=True)
    except DataError as e:
        raise SendError(f"Cannot send {e}") from None


def _c_store(paths, destination, calling_ae, timeout):
    try:
        from pynetdicom import AE
    except ImportError:
        from ptx_keras.errors import ModelError

        raise ModelError(f"Sending with C-STORE needs pynetdicom; {_INSTALL_HINT}") from None
    datasets = [(path, _read(path)) for path in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in datasets})
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    where = f"{destination} (C-STORE from {calling_ae})"
    _check_listening(destination, where, timeout, len(paths))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise SendError(
                f"{where}: the association was rejected (an unknown called or calling AE title?); "
                f"{len(paths)} file(s) not sent, kept on disk"
            )
        if assoc.is_aborted:
            raise SendError(f"{where}: the association was aborted; {len(paths)} file(s) not sent, kept on disk")
        raise SendError(
            f"{where}: no answer within {timeout:g} s or nothing listening (connection refused?); "
            f"{len(paths)} file(s) not sent, kept on disk"
        )
    stored = 0
    try:
        for path, ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as e:  # no accepted presentation context for it
                raise SendError(
                    f"{where}: cannot send {path} ({e}); {len(paths) - stored} file(s) not sent, kept on disk"
                ) from None
            code = getattr(status, "Status", None)
            if code is None:  # Orthanc, for one, closes the association on a caller it does not know
                raise SendError(
                    f"{where}: no answer for {path}: the PACS closed the association (does it accept "
                    f"calling AE title {calling_ae}?) or gave no answer within {timeout:g} s; "
                    f"{len(paths) - stored} file(s) not sent, kept on disk"
                )
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # success, or a warning: stored
                raise SendError(
                    f"{where}: {path} refused with status 0x{code:04X}; {len(paths) - stored} file(s) not "
                    "sent, kept on disk"
                )
            stored += 1
            logger.debug("stored %s in %s", path, destination)
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


def _check_listening(destination, where, timeout, count):
    """A TCP connection first: pynetdicom reports a refused connection as an aborted association."""
    import socket

    try:
        socket.create_connection((destination.host, destination.port), timeout=timeout).close()
    except TimeoutError:
        raise SendError(f"{where}: no answer within {timeout:g} s; {count} file(s) not sent, kept on disk") from None
    except OSError as e:
        raise SendError(
            f"{where}: cannot connect ({e.strerror or e}: PACS down or wrong host/port?); {count} "
            "file(s) not sent, kept on disk"
        ) from None


def _stow(paths, destination, timeout):
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        from ptx_keras.errors import ModelError

        raise ModelError(f"Sending with STOW-RS needs dicomweb-client; {_INSTALL_HINT}") from None
    datasets = [_read(path) for path in paths]
    session = requests.Session()
    session.request = _with_timeout(session.request, timeout)
    client = DICOMwebClient(url=destination.url, session=session)
    try:
        response = client.store_instances(datasets)
    except requests.exceptions.RequestException as e:
        raise SendError(
            f"{destination} (STOW-RS): {type(e).__name__}: {e}; {len(paths)} file(s) not sent, kept on disk"
        ) from None
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        uids = [item.get("ReferencedSOPInstanceUID") for item in failed]
        raise SendError(
            f"{destination} (STOW-RS): {len(failed)} instance(s) not stored: {uids}; the files are kept on disk"
        )
    return len(paths)


def _with_timeout(request, timeout):
    def call(*args, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call
