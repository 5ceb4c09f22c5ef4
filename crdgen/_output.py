"""Writing crdgen's output: to stdout, or to a file atomically (nothing half-written).

Both ``crdgen crd`` and ``crdgen clone`` end here. A file is written to a
temporary file beside the target and renamed over it, so a reader (or
``kubectl apply -f``) sees the old content or the new, never a torn write; an
unwritable target is one :class:`~fleet.errors.ConfigError` naming the path.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from fleet.errors import ConfigError

__all__ = ["write_output"]


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_output(text: str, output: Path | None) -> None:
    """Write ``text`` to stdout (``output`` None or ``-``) or atomically to the file ``output``."""
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output)
    tmp_name: str | None = None
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _mode_for(path))
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot write {path}: {reason}") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
