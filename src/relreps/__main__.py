import sys

from relreps.cli import main

sys.exit(main())
