import sys

from keras_visrec.cli import main

sys.exit(main())
