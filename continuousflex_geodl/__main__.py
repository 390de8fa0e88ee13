import sys

from continuousflex_geodl.core.cli import main

sys.exit(main())
