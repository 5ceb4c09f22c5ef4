"""The one place the sandbox's serving code imports its pure libraries from.

``fleet.machinery`` (label and field selectors, strategic merge patch),
``_schema`` (CRD schemas) and ``_tables`` (Table responses) are pure
libraries with their own tests; the serving modules reach them only through
these names, so the seam between the two stays one file wide.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fleet.machinery import FieldSelector as FieldSelector
from fleet.machinery import LabelSelector as LabelSelector
from fleet.machinery import label_selector_from_dict as label_selector_from_dict
from fleet.machinery import parse_field_selector as parse_field_selector
from fleet.machinery import parse_label_selector as parse_label_selector
from fleet.machinery import strategic_merge_patch as strategic_merge_patch
from fleet.sandbox._schema import Cause as Cause
from fleet.sandbox._schema import strict_decoding_message as strict_decoding_message
from fleet.sandbox._schema import validate_custom_resource as validate_custom_resource
from fleet.sandbox._tables import table_for as table_for


def utcnow(t: float) -> datetime:
    """A wall-clock reading as an aware datetime (the Age cells of Tables)."""
    return datetime.fromtimestamp(t, UTC)
