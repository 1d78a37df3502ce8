import sys

from finetune.cli.bench import main

sys.exit(main())
