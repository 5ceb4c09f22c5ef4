"""Kubernetes machinery every layer may use: pure libraries, no I/O, no components.

Layer 1, above only ``fleet.errors`` (which it imports) and ``fleet.wire``;
``fleet.kube``, ``fleet.api`` and every component stand on it. What the rest
of the project may use is re-exported here; the ``_``-prefixed modules are
this package's own.

- Label and field selectors (``_selectors``, a port of apimachinery's
  ``labels``/``fields``): :func:`parse_label_selector`,
  :func:`label_selector_from_dict`, :func:`parse_field_selector`,
  :class:`LabelSelector`, :class:`Requirement`, :class:`FieldSelector`.
- Strategic merge patch, server side (``_smp``): :func:`strategic_merge_patch`;
  and client side (``_twoway``): :func:`two_way_merge_patch`.
- Go-style formatting (``_gofmt``): :func:`go_quote`; Kubernetes times
  (``_times``): :func:`format_time`, :func:`format_micro_time`,
  :func:`parse_time`, :func:`utc_now`.
- Label and annotation rules (``_labels``, apimachinery's ``IsQualifiedName`` and
  ``IsValidLabelValue`` with their messages): :func:`qualified_name_errors`,
  :func:`label_value_errors`, :data:`TOTAL_ANNOTATION_SIZE`.
- Content types (``_content``): :data:`JSON`, :data:`MERGE_PATCH`,
  :data:`STRATEGIC_MERGE_PATCH`, ... defined once.
- HTTP/1.1 heads and body framing (``_http1``), shared by the hot-path client, the
  sandbox's server and the bench's servers: :func:`parse_response_head`,
  :func:`parse_request_head` (a :class:`RequestHead`), :func:`content_length`,
  :func:`is_chunked`, :func:`parse_chunk_size`, :data:`MAX_HEAD_BYTES`.
"""

from ._content import APPLY_PATCH as APPLY_PATCH
from ._content import JSON as JSON
from ._content import JSON_PATCH as JSON_PATCH
from ._content import MERGE_PATCH as MERGE_PATCH
from ._content import PROTOBUF as PROTOBUF
from ._content import STRATEGIC_MERGE_PATCH as STRATEGIC_MERGE_PATCH
from ._content import YAML as YAML
from ._gofmt import go_quote as go_quote
from ._http1 import MAX_HEAD_BYTES as MAX_HEAD_BYTES
from ._http1 import RequestHead as RequestHead
from ._http1 import content_length as content_length
from ._http1 import is_chunked as is_chunked
from ._http1 import parse_chunk_size as parse_chunk_size
from ._http1 import parse_request_head as parse_request_head
from ._http1 import parse_response_head as parse_response_head
from ._labels import LABEL_VALUE_MAX as LABEL_VALUE_MAX
from ._labels import TOTAL_ANNOTATION_SIZE as TOTAL_ANNOTATION_SIZE
from ._labels import label_value_errors as label_value_errors
from ._labels import qualified_name_errors as qualified_name_errors
from ._selectors import FieldSelector as FieldSelector
from ._selectors import FieldTerm as FieldTerm
from ._selectors import LabelSelector as LabelSelector
from ._selectors import Requirement as Requirement
from ._selectors import escape_field_value as escape_field_value
from ._selectors import label_selector_from_dict as label_selector_from_dict
from ._selectors import parse_field_selector as parse_field_selector
from ._selectors import parse_label_selector as parse_label_selector
from ._smp import KNOWN_KINDS as KNOWN_KINDS
from ._smp import strategic_merge_patch as strategic_merge_patch
from ._times import format_micro_time as format_micro_time
from ._times import format_time as format_time
from ._times import parse_time as parse_time
from ._times import utc_now as utc_now
from ._twoway import MERGE_KEYS as MERGE_KEYS
from ._twoway import two_way_merge_patch as two_way_merge_patch

__all__ = [
    "APPLY_PATCH",
    "JSON",
    "JSON_PATCH",
    "KNOWN_KINDS",
    "LABEL_VALUE_MAX",
    "MAX_HEAD_BYTES",
    "MERGE_KEYS",
    "MERGE_PATCH",
    "PROTOBUF",
    "STRATEGIC_MERGE_PATCH",
    "TOTAL_ANNOTATION_SIZE",
    "YAML",
    "FieldSelector",
    "FieldTerm",
    "LabelSelector",
    "RequestHead",
    "Requirement",
    "content_length",
    "escape_field_value",
    "format_micro_time",
    "format_time",
    "go_quote",
    "is_chunked",
    "label_selector_from_dict",
    "label_value_errors",
    "parse_chunk_size",
    "parse_field_selector",
    "parse_label_selector",
    "parse_request_head",
    "parse_response_head",
    "parse_time",
    "qualified_name_errors",
    "strategic_merge_patch",
    "two_way_merge_patch",
    "utc_now",
]
