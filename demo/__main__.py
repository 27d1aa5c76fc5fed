"""`make demo`: the in-process demonstration (see :mod:`demo.inprocess`)."""

import sys

from demo.inprocess import main

if __name__ == "__main__":
    sys.exit(main())
