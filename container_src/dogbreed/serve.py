"""`python -m dogbreed.serve`: the serving image's `serve` (the program is
`dogbreed.serving.server`)."""

import sys

from dogbreed.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
