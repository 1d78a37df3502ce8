"""The studio's export desk: the adapter as a zip, a merged standalone model (folder and zip), the
model card and the Hub upload, for runs of one workspace named by their name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError


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
        from finetune.export.merge import exports_dir

        folder = exports_dir(self._run(name)) / "merged"
        return folder if (folder / "config.json").is_file() else None

    def zip_adapter(self, name: str, out: Path | None = None) -> Path:
        """The adapter (or a full fine-tune's model) as a zip: <run>/exports/ unless `out` (CLI) says where."""
        from finetune.export.merge import zip_adapter

        return zip_adapter(self._run(name), out)

    def merge(self, name: str, progress: Callable[[float, str], Any] | None = None, out: Path | None = None) -> Merged:
        """Fold the adapter into a 16-bit (GPU) or float32 (CPU) copy of the base: <run>/exports/merged
        unless `out` (CLI) says where."""
        from finetune.export.merge import merge_adapter, saved_dtype

        run = self._run(name)
        with self.studio.lease.hold("merging"):
            self.studio.lease.free_memory()  # the merge loads its own unquantized copy
            folder = merge_adapter(run, out, progress=progress)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
        where = folder.relative_to(run.path).as_posix() if folder.is_relative_to(run.path) else str(folder)
        return Merged(folder=folder, size_mb=size, dtype=saved_dtype(folder), where=where)

    def zip_merged(self, name: str) -> Path:
        from finetune.export.merge import exports_dir
        from finetune.files import zip_folder

        run = self._run(name)
        folder = self.merged_folder(name)
        if folder is None:
            raise FinetuneError("This run has no merged model yet: press “Merge into a standalone model” first.")
        # stored, not deflated: safetensors barely compress and a merged model is large
        return zip_folder(folder, exports_dir(run) / f"{run.name}-merged.zip", deflate=False)

    def model_card(self, name: str) -> str:
        from finetune.export.merge import model_card

        return model_card(self._run(name), merged=self.merged_folder(name) is not None)

    def push(
        self, name: str, repo_id: str, token: str | None, *, merged: bool, private: bool = True, folder=None
    ) -> str:
        """Upload the merged model (`folder`: where it was merged, default its usual place) or the
        adapter; the token is handed to the Hub client only."""
        from finetune.export.merge import push_to_hub

        run = self._run(name)
        if merged:
            folder = folder or self.merged_folder(name)
            if folder is None:
                raise FinetuneError("Merge the model first, or choose to upload the adapter.")
        else:
            folder = run.adapter_dir
        return push_to_hub(folder, repo_id, token=(token or "").strip() or None, private=bool(private))

    # one checkpoint (the checkpoint curve's "export this checkpoint") ----------------------------------
    def export_checkpoint(self, name: str, step: int | str, kind: str = "zip", progress=None) -> Path | Merged:
        """The checkpoint at `step` of a run as an adapter zip (`kind="zip"`) or a merged model (`"merge"`),
        written beside the final adapter's exports under a name that says the step."""
        from finetune.export.checkpoint import checkpoint_run, export_names
        from finetune.export.merge import exports_dir, merge_adapter, saved_dtype, zip_adapter

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
