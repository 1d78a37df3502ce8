"""`python -m finetune.estimate estimate --model M --preset P` (the same as `finetune estimate`)."""

from finetune.estimate.cli import main

raise SystemExit(main())
