"""The studio's export desk: the adapter as a zip, a merged standalone model (folder and zip), the
model card, the Hub upload, and GGUF files (with an Ollama Modelfile, and the adapter as a GGUF LoRA) for
llama.cpp, Ollama and LM Studio, for runs of one workspace named by their name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError
from finetune.export.checkpoint import checkpoint_run, export_names
from finetune.export.gguf import export_gguf, export_lora_gguf, list_gguf
from finetune.export.gguf_converter import converter_dir, default_cache_dir, fetch_converter, unpack_sdist
from finetune.export.gguf_types import type_choices
from finetune.export.merge import exports_dir, merge_adapter, model_card, push_to_hub, saved_dtype, zip_adapter
from finetune.files import zip_folder
from finetune.models import resolve_model_path


@dataclass(frozen=True)
class Merged:
    """What a merge wrote: the folder, its size and the dtype of its weights."""

    folder: Path
    size_mb: float
    dtype: str
    where: str  # the folder relative to the run folder when inside it


class ExportDesk:
    def __init__(self, studio: Any):
        self.studio = studio

    def _run(self, name: str | None):
        if not name:
            raise FinetuneError("Pick a run with a saved adapter first.")
        return self.studio.run(name)

    def merged_folder(self, name: str) -> Path | None:
        """The merged model of a run when one was written (its default place), else None."""

        folder = exports_dir(self._run(name)) / "merged"
        return folder if (folder / "config.json").is_file() else None

    def zip_adapter(self, name: str, out: Path | None = None) -> Path:
        """The adapter (or a full fine-tune's model) as a zip: <run>/exports/ unless `out` (CLI) says where."""

        return zip_adapter(self._run(name), out)

    def merge(self, name: str, progress: Callable[[float, str], Any] | None = None, out: Path | None = None) -> Merged:
        """Fold the adapter into a 16-bit (GPU) or float32 (CPU) copy of the base: <run>/exports/merged
        unless `out` (CLI) says where."""

        run = self._run(name)
        with self.studio.lease.hold("merging"):
            self.studio.lease.free_memory()  # the merge loads its own unquantized copy
            folder = merge_adapter(run, out, progress=progress)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
        where = folder.relative_to(run.path).as_posix() if folder.is_relative_to(run.path) else str(folder)
        return Merged(folder=folder, size_mb=size, dtype=saved_dtype(folder), where=where)

    def zip_merged(self, name: str) -> Path:
        run = self._run(name)
        folder = self.merged_folder(name)
        if folder is None:
            raise FinetuneError("This run has no merged model yet: press “Merge into a standalone model” first.")
        # stored, not deflated: safetensors barely compress and a merged model is large
        return zip_folder(folder, exports_dir(run) / f"{run.name}-merged.zip", deflate=False)

    def model_card(self, name: str) -> str:
        return model_card(self._run(name), merged=self.merged_folder(name) is not None)

    def push(
        self, name: str, repo_id: str, token: str | None, *, merged: bool, private: bool = True, folder=None
    ) -> str:
        """Upload the merged model (`folder`: where it was merged, default its usual place) or the
        adapter; the token is handed to the Hub client only."""

        run = self._run(name)
        if merged:
            folder = folder or self.merged_folder(name)
            if folder is None:
                raise FinetuneError("Merge the model first, or choose to upload the adapter.")
        else:
            folder = run.adapter_dir
        return push_to_hub(folder, repo_id, token=(token or "").strip() or None, private=bool(private))

    # GGUF ---------------------------------------------------------------------------------------------
    def gguf_types(self, name: str | None = None) -> list:
        """Every GGUF type with whether this machine can make it for the run's model, and why not."""

        return type_choices(self._model_folder(name) if name else None)

    def _model_folder(self, name: str) -> Path | None:
        """A folder with the run's model config.json: its merge, its full model, or a local base."""

        run = self._run(name)
        if self.merged_folder(name) is not None:
            return self.merged_folder(name)
        if run.config().method == "full":
            return run.adapter_dir
        try:
            folder = Path(resolve_model_path(run.config().model_name_or_path, run.workspace))
        except FinetuneError:
            return None
        return folder if folder.is_dir() else None

    def gguf(self, name: str, type_name: str, progress: Callable[[float, str], Any] | None = None, out=None):
        """A GGUF of the run in `type_name` (merging first when needed) with its Ollama Modelfile: a GgufExport."""

        run = self._run(name)
        with self.studio.lease.hold("exporting to GGUF"):
            self.studio.lease.free_memory()  # a merge loads its own unquantized copy
            return export_gguf(run, type_name, out, progress=progress)

    def lora_gguf(self, name: str, progress: Callable[[float, str], Any] | None = None, out=None) -> Path:
        """The adapter alone as a GGUF LoRA, for llama.cpp's --lora on the base model's GGUF."""

        return export_lora_gguf(self._run(name), out, progress=progress)

    def gguf_files(self, name: str) -> list[Path]:
        """The run's exported GGUF files (its default folder), newest first."""

        return list_gguf(self._run(name))

    @staticmethod
    def gguf_converter(sdist: str | None = None, to: str | None = None) -> Path:
        """Fetch llama.cpp's converter now (or unpack a downloaded sdist) into the cache, or into `to`
        (then point FINETUNE_GGUF_CONVERTER at it); returns the folder."""

        target = Path(to).expanduser().resolve() if to else None
        if sdist:
            return unpack_sdist(Path(sdist).expanduser(), target or default_cache_dir())
        return fetch_converter(target) if target else converter_dir()

    # one checkpoint (the checkpoint curve's "export this checkpoint") ----------------------------------
    def export_checkpoint(self, name: str, step: int | str, kind: str = "zip", progress=None) -> Path | Merged:
        """The checkpoint at `step` of a run as an adapter zip (`kind="zip"`) or a merged model (`"merge"`),
        written beside the final adapter's exports under a name that says the step."""

        if kind not in ("zip", "merge"):
            raise FinetuneError(f"export kind {kind!r} is not one of: zip, merge")
        view = checkpoint_run(self._run(name), step)
        zip_path, merged_path = export_names(view, exports_dir(view))
        if kind == "zip":
            return zip_adapter(view, zip_path)
        with self.studio.lease.hold("merging"):
            self.studio.lease.free_memory()
            folder = merge_adapter(view, merged_path, progress=progress)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
        return Merged(
            folder=folder, size_mb=size, dtype=saved_dtype(folder), where=folder.relative_to(view.path).as_posix()
        )
