"""``python -m autoprof.cli``."""

import sys

from autoprof.cli.app import main

sys.exit(main())
