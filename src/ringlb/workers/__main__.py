"""`python -m ringlb.workers <fd>`: one worker process (started by the control process)."""

import sys

from ringlb.workers.worker import main

sys.exit(main())
