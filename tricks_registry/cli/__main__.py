"""``python -m tricks_registry.cli`` (``torchrun ... -m tricks_registry.cli train ...``): the ``tricks`` command."""
import sys

from . import main

sys.exit(main())
