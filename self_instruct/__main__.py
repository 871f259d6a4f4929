"""python -m self_instruct"""

import sys

from .cli import main

sys.exit(main())
