"""`python -m browserd.daemon`: the same as the `browserd` command."""

import sys

from .main import main

sys.exit(main())
