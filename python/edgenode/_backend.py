"""The one place that chooses between the Rust extension and the pure-Python twin.

``EDGENODE_BACKEND`` selects: ``auto`` (default: the extension if it imports,
else pure Python), ``rust`` (the extension or an :class:`ImportError` that says
why), ``python`` (always the pure twin). Nothing else in the package imports the
extension; the public modules (:mod:`edgenode.router`, :mod:`edgenode.twin`,
:mod:`edgenode.store`) take their classes and functions from :data:`core`.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from edgenode.errors import ConfigError

BACKEND_ENV = "EDGENODE_BACKEND"
CHOICES = ("auto", "rust", "python")


NATIVE_MODULE = "edgenode._edgecore_fast"


def load_native() -> ModuleType | None:
    """Import the extension, or return ``None`` when it is not installed.

    An extension that is present but cannot be loaded (a wheel of another architecture,
    a missing library) also gives ``None``, with a warning that says why: a silent fall
    back to the pure twin would hide a broken install behind slower nodes.
    """
    try:
        return importlib.import_module(NATIVE_MODULE)
    except ModuleNotFoundError as error:
        if error.name != NATIVE_MODULE:
            warnings.warn(f"{NATIVE_MODULE} failed to import: {error}", stacklevel=2)
        return None
    except ImportError as error:
        warnings.warn(f"{NATIVE_MODULE} is installed but failed to load: {error}", stacklevel=2)
        return None


def choose(requested: str) -> tuple[str, ModuleType]:
    """Return ``(name, namespace)`` for the backend ``requested`` selects.

    The pure twin is imported only when it is chosen: a node on the Rust backend then
    never loads ``sqlite3`` and the pure modules (about 2 MB of resident memory).
    """
    requested = requested.strip().lower() or "auto"
    if requested not in CHOICES:
        raise ConfigError(f"{BACKEND_ENV}={requested!r} is not one of {', '.join(CHOICES)}")
    if requested == "python":
        from edgenode import _pure

        return "python", _pure
    native = load_native()
    if native is not None:
        return "rust", native
    if requested == "rust":
        raise ImportError(
            f"{BACKEND_ENV}=rust but the extension edgenode._edgecore_fast is not installed "
            "or failed to load (build it with `maturin develop` or install a wheel)"
        )
    from edgenode import _pure

    return "python", _pure


backend, core = choose(os.environ.get(BACKEND_ENV, "auto"))
