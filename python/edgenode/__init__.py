"""edgenode: an embedded-first edge runtime.

The hot paths (topic router, twin engine, durable store) come from the Rust
extension when it is importable and from the pure-Python twin otherwise;
:mod:`edgenode._backend` makes that choice once. ``edgenode.backend`` says which
one this process uses: ``"rust"`` or ``"python"``.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from edgenode._backend import backend

try:
    __version__ = _dist_version("edgenode")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "backend"]
