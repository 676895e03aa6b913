"""`python -m browserd.client`: the same as the `browserctl` command."""

import sys

from .cli import main

sys.exit(main())
