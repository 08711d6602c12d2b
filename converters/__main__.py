"""``python -m keras_visrec.converters`` — the ``convert`` command without the umbrella CLI."""

import sys

from keras_visrec.converters.cli import main

if __name__ == "__main__":
    sys.exit(main())
