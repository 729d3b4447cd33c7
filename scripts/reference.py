"""The reference release: `forelen reference`, run from this checkout (see
src/forelen/pipelines/reference.py and its reference.toml)."""

import sys

from forelen.pipelines.reference import main

if __name__ == "__main__":
    sys.exit(main())
