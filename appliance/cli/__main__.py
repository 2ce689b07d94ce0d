"""``python -m appliance.cli``: what ``appliance serve`` runs its worker process with."""

import sys

from appliance.cli import main

sys.exit(main())
