"""`python -m finetune.cli ...`: the same as the `finetune` command."""

import sys

from finetune.cli.main import main

sys.exit(main())
