"""`python -m forkspawn.quality ...` (cli.main), and `_call FUNC KWARGS`: one function of the
probes run in this fresh interpreter (probing.call_here)."""

import json
import sys

from . import probing
from .cli import main

if __name__ == "__main__":  # not in a spawned child, which imports this module as __mp_main__
    if sys.argv[1:2] == ["_call"]:
        print(json.dumps(probing.call_here(sys.argv[2], json.loads(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
