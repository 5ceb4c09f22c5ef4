"""Small typed views of Kubernetes objects, decoded straight from the wire with msgspec.

A shard decodes thousands of watch events a second; a full ``v1.Pod`` model
would cost most of that time in fields nobody reads. So the client decodes
only what its consumers need (msgspec ``docs/perf-tips.rst``): a watch line
into :class:`WatchEnvelope` with the object left as ``msgspec.Raw``, then the
object into the consumer's own view with a decoder built once per view type
(:func:`decoder_for`).

A view is any ``msgspec.Struct`` with a ``metadata: ObjectMeta`` field plus
whatever else its consumer reads, e.g.::

    class PodSpecView(msgspec.Struct, rename="camel", frozen=True):
        node_name: str = ""

    class PodView(msgspec.Struct, frozen=True):
        metadata: ObjectMeta
        spec: PodSpecView = PodSpecView()

Field names are snake_case; ``rename="camel"`` maps them to the JSON names
(``resource_version`` <- ``resourceVersion``). Every field has a default, so a
view never fails on an object that omits an optional field. Views are frozen:
one decoded object is shared by the reflector's store and its consumers, and
msgspec only accepts a Struct instance as a field default if it is frozen.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, TypeVar

import msgspec

__all__ = [
    "ListEnvelope",
    "ListMeta",
    "MetaOnly",
    "MetaView",
    "ObjectMeta",
    "OwnerReference",
    "Status",
    "StatusDetails",
    "View",
    "WatchEnvelope",
    "decoder_for",
    "object_key",
]


class OwnerReference(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """The part of an owner reference the fleet reads (garbage collection, Node CR -> Node)."""

    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class ObjectMeta(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """``metadata`` of any object, reduced to what controllers of fake kubelets use."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    finalizers: list[str] = []
    owner_references: tuple[OwnerReference, ...] = ()
    """A tuple, not a list, so a view may narrow it to a subtype (``fleet.controlplane.Meta``)."""


class ListMeta(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """``metadata`` of a list answer: the snapshot's resourceVersion and the paging token."""

    resource_version: str = ""
    continue_: str = ""
    """The ``continue`` token; empty on the last page."""
    remaining_item_count: int | None = None


class WatchEnvelope(msgspec.Struct, frozen=True):
    """One watch line: the event type, and the object still undecoded.

    The object stays raw so each consumer decodes it into its own view, and a
    BOOKMARK or ERROR object into :class:`MetaOnly` or :class:`Status`.
    """

    type: str
    object: msgspec.Raw


class ListEnvelope(msgspec.Struct, frozen=True):
    """A list answer: its metadata and the items, each still undecoded."""

    metadata: ListMeta = ListMeta()
    items: list[msgspec.Raw] | None = None
    """``None`` when the server sent ``"items": null`` (Go's nil slice)."""


class MetaOnly(msgspec.Struct, frozen=True):
    """Any object, read for its metadata only (BOOKMARK objects carry nothing else)."""

    metadata: ObjectMeta = ObjectMeta()


class StatusDetails(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    name: str = ""
    kind: str = ""
    retry_after_seconds: int | None = None
    causes: list[dict[str, Any]] = []


class Status(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """A ``metav1.Status``: an error answer, or the object of a watch ERROR event."""

    status: str = ""
    message: str = ""
    reason: str = ""
    code: int = 0
    details: StatusDetails | None = None


class MetaView(Protocol):
    """What the client reads of any object's metadata: its key, uid and resourceVersion.

    :class:`ObjectMeta` is one; a consumer holding many objects (the shard's pods)
    decodes a narrower struct of its own."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def uid(self) -> str: ...

    @property
    def resource_version(self) -> str: ...


class View(Protocol):
    """What the client needs of a view: its metadata (key and resourceVersion)."""

    @property
    def metadata(self) -> MetaView: ...


T = TypeVar("T")


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decoder_for(view: type[T]) -> msgspec.json.Decoder[T]:
    """The one JSON decoder for ``view``, built on first use and reused after.

    Building a decoder compiles the type's schema; doing it per object would
    cost more than the decoding itself.
    """
    decoder = _decoders.get(view)
    if decoder is None:
        decoder = _decoders[view] = msgspec.json.Decoder(view)
    return decoder


def object_key(meta: MetaView) -> str:
    """The store key of an object: ``namespace/name``, or ``name`` if cluster-scoped."""
    return f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name
