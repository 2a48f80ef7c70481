"""``python -m edgenode`` is the ``edgenode`` command."""

import sys

from edgenode.cli import main

sys.exit(main())
