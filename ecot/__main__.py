import sys

from ecot.cli import main

sys.exit(main())
