"""``python -m e5v_qdrant.cli``: the ``e5v-qdrant`` command."""

import sys

from . import main

sys.exit(main())
