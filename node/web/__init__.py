"""HTTP and DICOMweb helpers shared by the stages: one home for each (issue 17).

* ``node.web.multipart`` — ``multipart/related`` (RFC 2387, PS3.18 8.6): the streaming parser
  used by STOW-RS, the worker callbacks, WADO-RS pulls and the remote worker, and the writers.
"""

from node.web.multipart import (
    Part,
    PartCollector,
    boundary_of,
    encode_related,
    iter_related,
    related_content_type,
)

__all__ = [
    "Part",
    "PartCollector",
    "boundary_of",
    "encode_related",
    "iter_related",
    "related_content_type",
]
