"""``python -m sfn_pauser_cli``: the same as the ``sfn-pauser`` command."""

import sys

from sfn_pauser_cli.main import main

sys.exit(main())
