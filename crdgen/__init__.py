"""crdgen: clone a real cluster's nodes into Node CRs, and write the CRD manifests.

A component (layer 4) with its own command line, ``crdgen.cli`` (layer 6).
What others may use is re-exported here; the ``_``-prefixed modules are this
package's own.

- Cloning (``_clone``): :class:`CloneOptions`, :func:`clone_node`,
  :func:`clone_nodes`, :func:`render` (YAML or JSON).
- The CRD manifests as ``deploy/crds/`` holds them (``_crd``): :func:`render_crds`.
"""

from ._clone import CloneOptions as CloneOptions
from ._clone import clone_node as clone_node
from ._clone import clone_nodes as clone_nodes
from ._clone import render as render
from ._crd import render_crds as render_crds

__all__ = ["CloneOptions", "clone_node", "clone_nodes", "render", "render_crds"]
