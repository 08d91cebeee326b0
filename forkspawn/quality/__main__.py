"""`python -m forkspawn.quality ...` (cli.main), and `_call FUNC KWARGS`: one function of the
probes run in this fresh interpreter (probing._fresh)."""

import json
import sys

from . import probing
from .cli import main

# What `_fresh` may call in a fresh interpreter, by name.
FRESH = {"_probes_here": probing._probes_here, "_sampler_here": probing._sampler_here}

if __name__ == "__main__":  # not in a spawned child, which imports this module as __mp_main__
    if sys.argv[1:2] == ["_call"]:
        print(json.dumps(FRESH[sys.argv[2]](**json.loads(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
