"""The studio's GRPO desk: the reward functions a page offers, whether a custom reward file may run here,
the sampled completions of a run, and notes on a GRPO config before Start.

A custom reward file runs Python code in the server process. The CLI (a Studio with restrict_paths=False)
allows it; the web app only when its host started it with `python app.py --allow-custom-rewards`
(`allow_custom_code()`), and then the file must lie in the allowed places like every typed path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.errors import ConfigError
from finetune.names import safe_name
from finetune.paths import check_allowed_path
from finetune.plan.generation import prompts_per_step_of
from finetune.reward_spec import CUSTOM_FLAG, CUSTOM_REFUSED, READY, uses_custom_code
from finetune.train.completions import read_samples, sample_steps

HIGH_GRPO_LEARNING_RATE = 2e-3  # demo, LoRA r16: 1e-3 learned, 5e-3 collapsed the reward (issue 25)


class RewardDesk:
    def __init__(self, studio: Any):
        self.studio = studio
        self.custom_allowed = not studio.restrict_paths  # the CLI may run custom code; the app only when told

    def allow_custom_code(self, allowed: bool = True) -> None:
        """The host's decision (app.py --allow-custom-rewards): custom reward files may run in this process."""
        self.custom_allowed = bool(allowed)

    @staticmethod
    def functions() -> list[tuple[str, str]]:
        """(name, help) of every reward function, custom last."""

        return [(spec.name, spec.help) for spec in READY.values()]

    def custom_note(self) -> str:
        if self.custom_allowed:
            return "Custom reward files are allowed here: they run as Python code in this server process."
        return (
            "Custom reward files are off: they run Python code on the server, so the app allows them only when "
            f"its host starts it with `python app.py {CUSTOM_FLAG}`. The command line (`finetune train`) always can."
        )

    def check_allowed(self, config: Any) -> None:
        """Refuse a config whose custom reward file may not run here (before anything is made)."""

        if not uses_custom_code(config):
            return
        if not self.custom_allowed:
            raise ConfigError([CUSTOM_REFUSED])
        if self.studio.restrict_paths and config.reward_custom_file.strip():
            check_allowed_path(config.reward_custom_file.strip(), self.studio.workspace, "reward_custom_file")

    def store_custom_file(self, path: str | None) -> str:
        """Copy an uploaded reward file into <workspace>/rewards/ (a stable path a run reads), when allowed."""
        import hashlib
        import shutil

        if not path:
            return ""
        if not self.custom_allowed:
            raise ConfigError([CUSTOM_REFUSED])
        src = Path(path)
        if src.suffix.lower() != ".py":
            raise ConfigError([f"reward_custom_file: {src.name} is not a Python file (.py)"])
        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
        dest = self.studio.workspace / "rewards" / f"{digest}-{safe_name(src.name, 'reward.py', 120)}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copyfile(src, dest)
        return str(dest)

    def notes(self, config: Any) -> list[str]:
        """What to know about a GRPO config before Start (empty for other objectives)."""
        if config.objective != "grpo":
            return []

        prompts = prompts_per_step_of(config)
        notes = [
            f"Each step samples {config.num_generations} completions for each of {prompts:g} "
            f"prompt{'' if prompts == 1 else 's'} (per_device_train_batch_size x gradient_accumulation_steps counts "
            f"completions), up to {config.max_completion_length} tokens each."
        ]
        if config.learning_rate > HIGH_GRPO_LEARNING_RATE:
            notes.append(
                f"learning_rate {config.learning_rate:g} is high for GRPO: on the demo (LoRA r16) 1e-3 raised the "
                "reward and 5e-3 collapsed it (measured on CPU); the preset grpo-demo has settings that learn."
            )
        return notes

    def samples(self, name: str, step: int | None = None) -> list[dict]:
        """The latest (or `step`'s) saved sample of a run's completions with their rewards."""

        return read_samples(self.studio.run(name).path, step)

    def sample_steps(self, name: str) -> list[int]:
        return sample_steps(self.studio.run(name).path)
