import sys

from cinetron.tools.cli import main

sys.exit(main())
