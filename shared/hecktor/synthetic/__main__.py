"""``python -m hecktor.synthetic --out DIR --cases 20 --seed 0 --size small``: see :mod:`hecktor.synthetic.cli`."""

import sys

from hecktor.synthetic.cli import main

sys.exit(main())
