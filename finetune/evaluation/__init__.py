"""Judging a fine-tune: blind A/B votes, batch evaluation on held-out data, a prompt set
across checkpoints, word diffs and a shareable report. No UI code here (gradio-free).

Submodules: `metrics` (scores), `ab` (blind pairs, votes, tally), `examples` (rows ->
prompts/references, training-faithful generation), `batch` (evaluate, saved evaluations),
`prompt_grid` (prompt sets, checkpoint grid), `diff`, `charts` (plotly + inline SVG),
`report` (`finetune evaluate` is finetune/cli/evaluate.py); beyond the run's rows: `benchmark` (lm-eval,
with `benchmark_tasks`, `benchmark_speed`, `benchmark_charts` and the built-in set in `tasks/`), `forgetting`,
`checkpoints` (the curve), `votes` (-> preference pairs), `chat` and `sides`, `seed_metrics` (BLEU, perplexity).
Importing this package loads no model and no torch.
"""

from finetune.evaluation.ab import (
    BlindPair,
    Tally,
    Vote,
    export_votes,
    load_votes,
    new_blind_pair,
    record_vote,
    run_tally,
    tally,
    wilson_interval,
)
from finetune.evaluation.batch import (
    EvalRow,
    Evaluation,
    evaluate,
    latest_evaluation,
    list_evaluations,
    load_evaluation,
)
from finetune.evaluation.charts import summary_figure, tally_figure
from finetune.evaluation.common import EvaluationError
from finetune.evaluation.diff import word_diff, word_diff_html
from finetune.evaluation.metrics import exact_match, rouge_l, score_answer, strip_think, token_f1
from finetune.evaluation.prompt_grid import (
    PromptGrid,
    list_grids,
    list_prompt_sets,
    load_grid,
    load_prompt_set,
    prompts_from_text,
    run_prompt_grid,
    save_prompt_set,
)
from finetune.evaluation.report import build_report

__all__ = [
    "BlindPair",
    "EvalRow",
    "Evaluation",
    "EvaluationError",
    "PromptGrid",
    "Tally",
    "Vote",
    "build_report",
    "evaluate",
    "exact_match",
    "export_votes",
    "latest_evaluation",
    "list_evaluations",
    "list_grids",
    "list_prompt_sets",
    "load_evaluation",
    "load_grid",
    "load_prompt_set",
    "load_votes",
    "new_blind_pair",
    "prompts_from_text",
    "record_vote",
    "rouge_l",
    "run_prompt_grid",
    "run_tally",
    "save_prompt_set",
    "score_answer",
    "strip_think",
    "summary_figure",
    "tally",
    "tally_figure",
    "token_f1",
    "wilson_interval",
    "word_diff",
    "word_diff_html",
]
