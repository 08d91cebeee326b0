"""`python -m forkspawn.quality _call FUNC KWARGS`: one function of the probes run in this fresh
interpreter (probing.call_here), the parent a probe needs. The command line is `forkspawn quality`."""

import json
import sys

from . import probing

if __name__ == "__main__":  # not in a spawned child, which imports this module as __mp_main__
    if sys.argv[1:2] != ["_call"]:
        print("python -m forkspawn.quality: only `_call` (the probes' fresh parent); the command line is "
              "`forkspawn quality ...`", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(probing.call_here(sys.argv[2], json.loads(sys.argv[3]))))
