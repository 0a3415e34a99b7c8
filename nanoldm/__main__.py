import sys

from nanoldm.cli.__main__ import main

sys.exit(main())
