"""``python -m btchat.cli``."""

import sys

from btchat.cli.main import main

sys.exit(main())
