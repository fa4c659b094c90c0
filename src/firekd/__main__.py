import sys

from firekd.cli import main

sys.exit(main())
