"""A do-nothing pynetdicom C-STORE SCP: the Python floor for ``bench/ingest.py``.

It accepts every storage SOP class, reads the received bytes and answers 0x0000 at once: no
file, no sync, no index.  Whatever ainode achieves on top of pynetdicom is bounded by this.
Run as ``python bench/pynetdicom_scp.py PORT``.
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts

_config.UNRESTRICTED_STORAGE_SERVICE = True
_config.LOG_HANDLER_LEVEL = "none"


def _on_store(event: evt.Event) -> int:
    request: Any = event.request
    request.DataSet.getvalue()
    return 0x0000


def _on_connect(event: evt.Event) -> None:
    assoc: Any = event.assoc
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main() -> None:
    ae = AE("PYNETDICOM")
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        ae.add_supported_context(cx.abstract_syntax, list(AllTransferSyntaxes))
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 16
    ae.start_server(
        ("127.0.0.1", int(sys.argv[1])),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, _on_store), (evt.EVT_CONN_OPEN, _on_connect)],
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
