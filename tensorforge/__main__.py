"""`python -m tensorforge ...`: the command line (tensorforge/cli/), as the `tensorforge` console script.

    python -m tensorforge compile model.onnx --target armv8 -o out/
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
