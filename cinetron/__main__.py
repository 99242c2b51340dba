import sys

from cinetron.cli import main

sys.exit(main())
