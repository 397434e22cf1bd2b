"""``python -m dsf_core``: the command line (see ``dsf_core.cli``)."""

import sys

from .cli import main

sys.exit(main())
