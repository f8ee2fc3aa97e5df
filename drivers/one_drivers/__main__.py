"""``python -m one_drivers FAMILY DRIVER ACTION [ARGS...]``: run one driver action."""

import sys

from one_drivers.core.runner import main

sys.exit(main())
