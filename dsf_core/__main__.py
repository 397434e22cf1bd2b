"""``python -m dsf_core``: the command line (see ``dsf_core.cli``)."""

import sys

try:  # Ctrl-C while the libraries are still importing is one line too
    from .cli import main
except KeyboardInterrupt:
    print("interrupted; nothing written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
