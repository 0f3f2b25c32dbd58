import sys

from vggcifar.cli import main

sys.exit(main())
