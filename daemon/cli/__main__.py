"""``python -m daemon.cli``: the same as the ``darkroom`` command."""

import sys

from daemon.cli.main import main

sys.exit(main())
