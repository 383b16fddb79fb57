import sys

from peftlab.search.cli import main

sys.exit(main())
