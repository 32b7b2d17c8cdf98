"""`python -m mmchunk` runs the command line."""

import sys

from mmchunk.cli import main

sys.exit(main())
