"""DIMSE sending (pynetdicom C-STORE SCU): SRs and heat maps to ``--store-to AET@HOST:PORT``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from chestxr.core import PacsError
from chestxr.pacs._extras import require


@dataclass(frozen=True)
class Node:
    """A DICOM node: AE title, host, port."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def parse_node(text: str) -> Node:
    """``AET@HOST:PORT`` -> Node (PacsError naming the expected form)."""
    try:
        aet, rest = text.split("@", 1)
        host, port = rest.rsplit(":", 1)
        node = Node(aet.strip(), host.strip(), int(port))
    except ValueError:
        raise PacsError(f"--store-to {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@pacs.example.org:4242") from None
    if not node.aet or len(node.aet) > 16 or not node.host or not 0 < node.port < 65536:
        raise PacsError(f"--store-to {text!r}: the AE title must be 1-16 characters and the port 1-65535")
    return node


def c_store(datasets: Sequence[Any], node: Node, *, calling_aet: str = "CHESTXR", timeout: float = 30.0) -> int:
    """Send ``datasets`` to ``node`` in one association; returns how many it stored. Raises PacsError when
    the node cannot be reached, refuses the association or answers a failure status (nothing is retried
    here: the caller keeps what it could not send)."""
    require("pynetdicom")
    from pynetdicom import AE

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    if not datasets:
        return 0
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(node.host, node.port, ae_title=node.aet)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "cannot be reached (or did not answer)"
        raise PacsError(
            f"DICOM node {node} {why}; check the AE title, host and port of --store-to and that "
            f"it accepts stores from {calling_aet}"
        )
    stored = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):
                raise PacsError(
                    f"DICOM node {node} refused an instance (status "
                    f"{'none: connection lost' if code < 0 else f'0x{code:04X}'}); see its log"
                )
            stored += 1
    finally:
        assoc.release()
    return stored
