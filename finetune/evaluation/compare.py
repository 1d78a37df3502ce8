"""Base vs fine-tuned generation for the Compare tab and `finetune compare`.

For LoRA/DoRA runs there is ONE copy of the base model in memory: the adapter is attached
with PEFT and the "base" answer is generated inside `model.disable_adapter()`. Toggling
the adapter is global to the model, so every generation on a model holds that model's
lock from start to end; a base stream therefore finishes before an adapter stream starts.
The "base" answer must really come from the base (Unsloth Studio once answered "Base"
with the LoRA still active), which tests check against a plain, PEFT-free model.

Runs with method=full have no adapter: "fine-tuned" is the whole model saved in adapter/
and "base" is the original model, so two copies are unavoidable; each is loaded lazily,
on the first generation that needs it.

`against="gguf:<file>"` (evaluation.gguf_side) puts one of the run's GGUF exports where the base
stands: the file is loaded (dequantized) beside the run's model, once, and kept until another is named.

`get_comparer()` is a process-wide cache holding at most one Comparer (one loaded run).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.errors import ModelError, RunError
from finetune.evaluation.generation import CompareResult, Generation, GenerationSettings, StreamedText
from finetune.evaluation.gguf_side import gguf_path, is_gguf_side, load_gguf_model
from finetune.models import load_model, load_tokenizer, release_memory
from finetune.plan.hardware import detect_machine
from finetune.plan.planner import plan_for_inference
from finetune.runs import NO_ADAPTER_MESSAGE, Run, open_run
from finetune.runs.records import folder_file_problems

Prompt = str | list[dict[str, Any]]  # a person's prompt, or a held-out row's messages

MAX_LOADED_ADAPTERS = 6  # final adapter + a handful of checkpoints for a prompt grid


def resolve_adapter_path(run: Run, adapter_path: str | Path | None) -> Path:
    """adapter/ by default, else a folder inside the run (e.g. checkpoints/checkpoint-N).
    Paths outside the run are refused: the UI may pass what a user typed."""
    if adapter_path is None:
        if not run.has_adapter():
            raise RunError(f"{run.name}: {NO_ADAPTER_MESSAGE}")
        run.require_intact_adapter()  # a weights file cut short is named, not a SafetensorError
        return run.adapter_dir
    path = Path(adapter_path)
    path = (path if path.is_absolute() else run.path / path).resolve()
    if not path.is_relative_to(run.path):
        raise RunError(f"{adapter_path} is not inside the run folder {run.path}; pick adapter/ or a checkpoint")
    if not ((path / "adapter_config.json").is_file() or (path / "config.json").is_file()):
        raise RunError(f"{path} holds no saved adapter or model (no adapter_config.json / config.json)")
    if path == run.adapter_dir:
        run.require_intact_adapter()
    else:
        damaged = folder_file_problems(path, run.path)
        if damaged:
            raise RunError(f"The run '{run.name}' has a damaged file: {damaged[0]}; pick another checkpoint")
    return path


def adapter_name_for(run: Run, path: Path) -> str:
    """A PEFT-safe adapter name: `final` for adapter/, `checkpoint_N` for checkpoints."""
    if path == run.adapter_dir.resolve():
        return "final"
    return re.sub(r"[^A-Za-z0-9_]", "_", path.name) or "adapter"


def _weights_stamp(path: Path) -> tuple:
    """Changes when the adapter on disk is re-saved (a resumed run), so a cached copy is reloaded."""
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)


@dataclass
class _LoadedAdapter:
    internal: str  # the PEFT adapter name (unique per load, so a re-saved adapter can replace it)
    path: Path
    stamp: tuple


class Comparer:
    """Generates with and without a run's fine-tuning, one prompt at a time.

    LoRA/DoRA: the base is loaded once with the run's quantization and adapters are attached
    by name; `load_adapter` switches between adapter/ and checkpoints cheaply (no reload).
    method=full: two whole models (base and fine-tuned), each loaded lazily on first use.
    """

    def __init__(self, run: Run | str | Path, adapter_path: str | Path | None = None):
        self.run = open_run(run)
        self.config: RunConfig = self.run.config()
        self.full = self.config.method == "full"
        self.workspace = self.run.workspace
        self._lock = threading.RLock()  # held for a whole generation: adapter toggling is model-global
        self._adapters: OrderedDict[str, _LoadedAdapter] = OrderedDict()  # public name -> loaded adapter
        self._loads = 0
        self._closed = False
        self._base_model = None  # full: the base model; lora/dora: unused (the base is inside self.model)
        self._gguf: tuple[Path, object] | None = None  # (file, model) of the GGUF side, when one was asked for
        self.model = None  # lora/dora: the PeftModel; full: the fine-tuned model
        self.active_adapter: str | None = None
        self.adapter_path = resolve_adapter_path(self.run, adapter_path)
        self.tokenizer = self._load_tokenizer(self.adapter_path)
        self.load_adapter(self.adapter_path)

    # loading -------------------------------------------------------------
    def _load_tokenizer(self, adapter_path: Path):
        """The tokenizer saved with the adapter (it carries any chat template training set)."""

        has_own = any((adapter_path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
        return load_tokenizer(self.config, self.workspace, path=str(adapter_path) if has_own else None)

    def _load_model(self, path: Path | None = None, quantization: str | None = None):
        """The base (run's quantization) or, for full runs, a saved whole model (16/32-bit)."""

        plan = plan_for_inference(self.config, detect_machine())
        source = str(path) if path else None
        model = load_model(
            self.config, self.workspace, plan=plan, quantization=quantization, path=source, training=False
        )
        model.eval()
        return model

    def load_adapter(self, path: str | Path, adapter_name: str | None = None) -> str:
        """Attach (if needed) and activate the adapter at `path`; returns its name.

        Already-loaded adapters are just re-activated (reloaded if re-saved on disk); at most
        MAX_LOADED_ADAPTERS stay attached, least recently used dropped first.
        For method=full this swaps which fine-tuned model is used (loaded lazily).
        """
        path = resolve_adapter_path(self.run, path)
        name = adapter_name or adapter_name_for(self.run, path)
        with self._lock:
            self._check_open()
            if self.full:
                return self._switch_full_model(path, name)
            stamp = _weights_stamp(path)
            old = self._adapters.get(name)
            if old is None or (old.path, old.stamp) != (path, stamp):
                self._loads += 1
                internal = f"a{self._loads}"
                self._attach(path, internal)
                self._adapters[name] = _LoadedAdapter(internal, path, stamp)
                if old is not None:
                    self.model.delete_adapter(old.internal)
            self._adapters.move_to_end(name)
            self.set_adapter(name)
            self._evict()
            return name

    def _attach(self, path: Path, internal: str) -> None:
        from peft import PeftModel

        try:
            if self.model is None:
                base = self._load_model()
                self.model = PeftModel.from_pretrained(base, str(path), adapter_name=internal, is_trainable=False)
                self.model.eval()
            else:
                self.model.load_adapter(str(path), adapter_name=internal, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"Could not load the adapter in {path}: {str(exc).splitlines()[0][:300]}") from None

    def _evict(self) -> None:
        while len(self._adapters) > MAX_LOADED_ADAPTERS:
            name, loaded = next(iter(self._adapters.items()))  # least recently used; never the active one
            del self._adapters[name]
            self.model.delete_adapter(loaded.internal)

    def _switch_full_model(self, path: Path, name: str) -> str:
        if self.model is not None and path != self.adapter_path:
            self.model = None  # drop the previous fine-tuned copy before the next is loaded
            release_memory()
        self.adapter_path, self.active_adapter = path, name
        return name

    def set_adapter(self, adapter_name: str) -> None:
        """Activate an already-loaded adapter (see `adapters`)."""
        with self._lock:
            if self.full:
                if adapter_name != self.active_adapter:
                    raise RunError("full fine-tuning runs have no adapters to switch; use load_adapter(path)")
                return
            loaded = self._adapters.get(adapter_name)
            if loaded is None:
                raise RunError(f"adapter '{adapter_name}' is not loaded (loaded: {', '.join(self._adapters)})")
            if self.model.active_adapter != loaded.internal:
                self.model.set_adapter(loaded.internal, inference_mode=True)
            self.active_adapter = adapter_name
            self.adapter_path = loaded.path

    @property
    def adapters(self) -> list[str]:
        """Names of the attached adapters (`final`, `checkpoint_N`...), least recently used first."""
        return [self.active_adapter] if self.full else list(self._adapters)

    def _model_for(self, use_adapter: bool, adapter: str | None, against: str | None = None):
        """(model, context manager) for one side; loads full-run models lazily. Lock held.
        `against` ("gguf:<file>") replaces the base side with that GGUF export of the run."""
        if adapter is not None:
            self.set_adapter(adapter)
        if not use_adapter and is_gguf_side(against):
            return self._gguf_model(gguf_path(self.run, against)), nullcontext()
        if not self.full:
            if use_adapter:
                return self.model, nullcontext()
            return self.model, self.model.disable_adapter()
        if use_adapter:
            if self.model is None:
                self.model = self._load_model(self.adapter_path, quantization="none")
            return self.model, nullcontext()
        if self._base_model is None:
            self._base_model = self._load_model()
        return self._base_model, nullcontext()

    def _gguf_model(self, path: Path):
        stamp = (path, path.stat().st_mtime_ns)
        if self._gguf is None or self._gguf[0] != stamp:
            self._gguf = None  # drop the previous file before the next is loaded
            release_memory()
            self._gguf = (stamp, load_gguf_model(path))
        return self._gguf[1]

    def _check_open(self) -> None:
        if self._closed:
            raise RunError("this comparison was closed to free memory; open the run again")

    def close(self) -> None:
        """Drop every model reference (waits for a generation in progress) and free memory."""
        with self._lock:
            self._closed = True
            self.model = None
            self._base_model = None
            self._gguf = None
            self._adapters.clear()
        release_memory()

    # generation ----------------------------------------------------------
    def encode(self, prompt: Prompt, settings: GenerationSettings, *, as_text: bool = False):
        """Token ids for a prompt, the one encoder of every generation:

        - a person's prompt (str): a user turn, after the settings' system prompt, through the chat
          template when the tokenizer has one;
        - messages (a held-out row, list of dicts): through the chat template as they are, with their
          own system turn when they had one, exactly as training formatted them;
        - `as_text=True` (a prompt-completion row's prompt): the plain tokenizer, as TRL trained it.
        """
        settings.check()
        tok = self.tokenizer
        if isinstance(prompt, list):
            if getattr(tok, "chat_template", None):
                return tok.apply_chat_template(
                    prompt, add_generation_prompt=True, return_dict=True, return_tensors="pt"
                )
            return tok("\n\n".join(str(m.get("content", "")) for m in prompt), return_tensors="pt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RunError("the prompt is empty: type a question or instruction to compare")
        if as_text:
            return tok(prompt, return_tensors="pt")
        if getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            if settings.system_prompt.strip():
                messages.insert(0, {"role": "system", "content": settings.system_prompt})
            try:
                return tok.apply_chat_template(
                    messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
                )
            except Exception:  # some templates refuse a system turn (e.g. Gemma): fold it into the user turn
                if len(messages) == 1:
                    raise
                merged = [{"role": "user", "content": f"{settings.system_prompt}\n\n{prompt}"}]
                return tok.apply_chat_template(
                    merged, add_generation_prompt=True, return_dict=True, return_tensors="pt"
                )
        text = f"{settings.system_prompt}\n\n{prompt}" if settings.system_prompt.strip() else prompt
        return tok(text, return_tensors="pt")

    def _generate_kwargs(self, model, inputs, settings: GenerationSettings, **extra) -> dict[str, Any]:
        device = next(model.parameters()).device
        kw = {k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        kw.update(settings.generate_kwargs())
        kw["pad_token_id"] = self.tokenizer.pad_token_id
        kw.update(extra)
        return kw

    def _run_generate(
        self, use_adapter: bool, adapter: str | None, inputs, settings: GenerationSettings, against=None, **extra
    ):
        """Generate under the model lock with the side's adapter state; the seed is set right
        before `generate` so both sides sample from the same random stream."""
        import torch

        with self._lock:
            self._check_open()
            model, context = self._model_for(use_adapter, adapter, against)
            device = next(model.parameters()).device
            # fork_rng: seeding must not reset the RNG of a training job running in this process
            with context, torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                torch.manual_seed(int(settings.seed))
                return model.generate(**self._generate_kwargs(model, inputs, settings, **extra))

    @contextmanager
    def holding(self, use_adapter: bool, adapter: str | None = None) -> Iterator[Any]:
        """The model of one side (the base: the adapter disabled), under the model lock for the whole
        block: for work that drives the model itself, e.g. lm-eval's benchmarks. Nothing else can
        switch adapters or generate on this model until the block ends."""
        with self._lock:
            self._check_open()
            model, context = self._model_for(use_adapter, adapter)
            with context:
                yield model

    def completion_logps(
        self, prompt_ids: list[int], completions: list[list[int]], use_adapter: bool, adapter: str | None = None
    ) -> list[float]:
        """Summed log-probability of each completion's tokens after the prompt (what DPO compares), with
        the adapter or without it (the base), under the model lock."""
        import torch

        self._check_open()
        with self._lock:
            model, context = self._model_for(use_adapter, adapter)
            device = next(model.parameters()).device
            out = []
            with context, torch.no_grad():
                for completion in completions:
                    ids = torch.tensor([list(prompt_ids) + list(completion)], device=device)
                    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
                    target = ids[0, len(prompt_ids) :]
                    logps = torch.log_softmax(logits, dim=-1).gather(1, target[:, None])
                    out.append(float(logps.sum()))
            return out

    def generate(
        self,
        prompt: Prompt,
        use_adapter: bool,
        settings: GenerationSettings | None = None,
        *,
        adapter: str | None = None,
        stop: Any = None,
        as_text: bool = False,
        against: str | None = None,
    ) -> Generation:
        """One answer, with (`use_adapter=True`) or without the fine-tuning; only the new tokens decoded.

        `prompt` and `as_text`: see `encode`. `adapter` picks a loaded adapter by name (and makes it
        the active one) under the same lock as the generation, so a concurrent caller switching
        checkpoints cannot interfere. `stop` (an Event or a callable returning True) ends a long
        generation early. `against` ("gguf:<file>") answers the base side with that GGUF export.
        """
        settings = settings or GenerationSettings()
        inputs = self.encode(prompt, settings, as_text=as_text)
        extra = {} if stop is None else {"stopping_criteria": stopping_criteria(stop)}
        start = time.perf_counter()
        out = self._run_generate(use_adapter, adapter, inputs, settings, against, **extra)
        seconds = time.perf_counter() - start
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return Generation(text=text, tokens=int(new_tokens.numel()), seconds=seconds)

    def compare(
        self, prompt: str, settings: GenerationSettings | None = None, *, adapter: str | None = None, against=None
    ) -> CompareResult:
        """Base (or `against`'s GGUF) answer, then fine-tuned answer, with identical decoding settings and seed."""
        settings = settings or GenerationSettings()
        base = self.generate(prompt, False, settings, adapter=adapter, against=against)
        tuned = self.generate(prompt, True, settings, adapter=adapter)
        return CompareResult(base.text, tuned.text, base.tokens, tuned.tokens, base.seconds, tuned.seconds)

    def stream(
        self,
        prompt: str,
        use_adapter: bool,
        settings: GenerationSettings | None = None,
        *,
        adapter: str | None = None,
        against: str | None = None,
    ) -> Iterator[StreamedText]:
        """Yield the growing answer text as tokens arrive (for a live UI); once generation ends,
        the final text again with `.tokens`, the number of tokens generated (never re-counted
        from the text: decoding and re-encoding does not give the same tokens back).

        Generation runs in a thread that holds the model lock for its whole length. Closing
        the iterator early (a cancelled UI event) stops the generation at the next token.
        A bad prompt or settings raise here, before any thread starts.
        """
        settings = settings or GenerationSettings()
        inputs = self.encode(prompt, settings)
        return self._stream(inputs, use_adapter, adapter, settings, against)

    def _stream(
        self, inputs, use_adapter: bool, adapter: str | None, settings: GenerationSettings, against=None
    ) -> Iterator[StreamedText]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        failure: list[BaseException] = []
        generated: list[int] = []

        def work() -> None:
            try:
                stopping = stopping_criteria(cancel)
                out = self._run_generate(
                    use_adapter, adapter, inputs, settings, against, streamer=streamer, stopping_criteria=stopping
                )
                generated.append(int(out.shape[1] - inputs["input_ids"].shape[1]))
            except BaseException as exc:  # re-raised in the consumer's thread
                failure.append(exc)
                streamer.end()  # unblock the consumer

        thread = threading.Thread(target=work, name="finetune-compare-stream", daemon=True)
        thread.start()
        text = ""
        try:
            for piece in streamer:
                text += piece
                yield StreamedText(text)
        finally:
            cancel.set()
        thread.join()
        if failure:
            raise failure[0]
        yield StreamedText(text, generated[0] if generated else None)


def stopping_criteria(stop: Any):
    """Stopping criteria ending a generation once `stop` (an Event, or a callable returning True) says so."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    is_set = stop.is_set if hasattr(stop, "is_set") else stop

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return bool(is_set())

    return StoppingCriteriaList([StopWhenAsked()])


# process-wide cache: one loaded run at a time -------------------------------
_cache_lock = threading.Lock()
_cached: Comparer | None = None


def get_comparer(run: Run | str | Path, adapter_path: str | Path | None = None) -> Comparer:
    """The Comparer for `run`, reusing the loaded model when it is the same run.

    Loading another run frees the previous model first, so at most one is ever held.
    `adapter_path` switches the cached comparer to that adapter/checkpoint (cheap).
    """
    global _cached
    run = open_run(run)
    with _cache_lock:
        if _cached is not None and _cached.run.path == run.path:
            _cached.load_adapter(resolve_adapter_path(run, adapter_path))
            return _cached
        _release_locked()
        _cached = Comparer(run, adapter_path)
        return _cached


def release_comparer() -> None:
    """Free the cached model (e.g. before training starts on the same GPU)."""
    with _cache_lock:
        _release_locked()


def cached_comparer() -> Comparer | None:
    """The currently cached Comparer, if any (for tests and status displays)."""
    return _cached


def _release_locked() -> None:
    global _cached
    if _cached is None:
        return  # nothing to free: no garbage collection (a full one of a large process takes seconds)
    _cached.close()  # frees the memory (release_memory)
    _cached = None
