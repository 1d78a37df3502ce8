import sys

from finetune.bench.cli import main

sys.exit(main())
