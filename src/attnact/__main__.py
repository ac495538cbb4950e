import sys

from attnact.cli import main

sys.exit(main())
