"""``python -m batchbald_fast``: the ``batchbald-fast`` command."""

import sys

from .cli import main

sys.exit(main())
