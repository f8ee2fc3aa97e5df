"""``python -m one_drivers FAMILY DRIVER ACTION [ARGS...]``: run one driver action."""

from one_drivers.core.runner import exit_now, main

exit_now(main())
