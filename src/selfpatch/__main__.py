"""``python -m selfpatch`` (also what torchrun launches: ``torchrun ... -m selfpatch pretrain``)."""

import sys

from selfpatch.cli import main

sys.exit(main())
