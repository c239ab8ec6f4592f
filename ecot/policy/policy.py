"""``ECoTPolicy``: everything between an observation and an action, for a control loop.

It owns the prompt, image preprocessing, grammar-constrained decoding (:mod:`ecot.policy.decoder`),
parsing, action decoding and unnormalization, and the per-robot state of the modes:

* ``full`` — the whole reasoning every step (the paper's setting);
* ``reuse`` — the high-level part (TASK … SUBTASK) is kept for up to ``reuse_steps`` steps and
  prefilled in one pass; only MOVE REASONING, MOVE, GRIPPER POSITION and the action are decoded.
  It is written anew when the instruction changes, after ``reuse_steps`` steps, or when the policy's
  own MOVE says a subtask ended (a gripper open/close move: grasped or released);
* ``async`` — a background thread writes the high-level part for the newest observation while each
  control step decodes only the low-level part against the newest completed one; only the first
  step of an episode waits for a whole chain;
* ``no-reasoning`` — straight to ``ACTION:`` (policies trained with reasoning dropout / no reasoning).

Human edits (:meth:`PolicySession.edit`) replace fields with given text; generation continues
from the edited reasoning until the edit is cleared or the episode reset.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ecot.options import option
from ecot.policy.decoder import DEFAULT_BUDGETS, TAGS, DecodeRequest, DecodeResult, ECoTDecoder
from ecot.policy.grammar import writes_tag_or_eos
from ecot.policy.observation import check_image, check_instruction
from ecot.policy.modes import ACTION_DECODINGS, MODES
from ecot.prompts import conditioning_prompt
from ecot.reasoning import MOVE, MOVE_REASONING, TAG_TO_FIELD, VISIBLE_OBJECTS, Reasoning, prefix_before, render_objects, render_points

HIGH_LEVEL_END = TAGS.index(MOVE_REASONING)  # fields before it are the reusable high-level part
FIELD_TO_TAG = {name: tag for tag, name in TAG_TO_FIELD.items()}


@dataclass
class PolicyConfig:
    mode: str = option("full", "full: the whole reasoning every step; reuse: the high-level part serves several "
                               "steps; async: it is written in the background; no-reasoning: straight to the action",
                       choices=MODES)
    reuse_steps: int = option(5, "reuse mode: steps per high-level reasoning")  # 1 = every step anew
    grammar: bool = option(True, "constrained decoding; off: free greedy generation until EOS (mode full only)")
    unnorm_key: str | None = option(None, "the dataset statistics to unnormalize with (default: the only one)")
    budgets: dict[str, int] = option(default_factory=lambda: dict(DEFAULT_BUDGETS), cli=False)  # max tokens per field
    max_objects: int = option(12, "at most this many objects in VISIBLE OBJECTS")
    max_points: int = option(16, "at most this many points in GRIPPER POSITION")
    refresh_moves: tuple[str, ...] = option(("close gripper", "open gripper"), cli=False)  # reuse: a subtask ended
    # Each step checks the previous step's text as a draft (ecot.policy.decoder.DecodeRequest.draft):
    # where its reasoning repeats, many ids cost one forward. The choices stay the model's own.
    draft: bool = option(True, "check the previous step's text as a draft (several tokens per forward where the "
                               "reasoning repeats; the choices stay the model's)")
    compile: bool | str = option(False, cli=False)  # torch.compile the one-token decode step (CUDA graphs on GPU); or a backend name
    max_new_tokens: int = option(1024, "grammar off: generation limit")
    # How action tokens become the action: "argmax" = the greedy bin (as released checkpoints were
    # evaluated); "expected" = each dimension's mean over the model's distribution on the 256 bins
    # (the greedy ids are still what the model is conditioned on). Grammar on only.
    action_decoding: str = option("argmax", "action tokens -> action: the greedy bin, or the mean over the bins' "
                                  "probabilities", choices=ACTION_DECODINGS)
    # Models with a locator (ecot.model.locator) whose checkpoint keeps the object names: VISIBLE OBJECTS is
    # what the locator found, written as forced text (like a tool's output), and the language model writes the
    # rest of the chain from it. Its boxes hold off the demonstrations' paths, where the language model's own
    # copy of them does not (docs/quality.md, round fifteen). A hand edit of VISIBLE OBJECTS wins.
    locator_objects: bool = option(True, "models with a locator: write its found objects and boxes into VISIBLE "
                                         "OBJECTS instead of letting the language model copy them")
    # When MOVE is fixed before the action is decoded (the move head's choice, or a person's edit), keep each
    # translation dimension's action token among the bins that move the way MOVE says (ecot.policy.move_action):
    # the written MOVE is then what the robot does. None: on for checkpoints with a move head, else off.
    action_follows_move: bool | None = option(None, cli=False)
    # Models with a locator: the instruction's object is tracked from step to step -- its choice among the found
    # objects favours the one nearest the previous step's (ecot.model.locator.TRACK_SIGMA), so a covered object
    # or a colour and kind never seen together does not swap it for the other object (docs/quality.md, round
    # eighteen). The track starts anew with each episode (reset) and instruction.
    track_object: bool = option(True, "models with a locator: keep the instruction's object from step to step "
                                      "(off: choose it anew at every step from the found objects' words alone)")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown policy mode {self.mode!r}; expected one of {MODES}")
        if int(self.reuse_steps) < 1:
            raise ValueError(f"reuse_steps must be at least 1, got {self.reuse_steps}")
        unknown = set(self.budgets) - set(TAGS)
        if unknown:
            raise ValueError(f"budgets name unknown tags {sorted(unknown)}; valid tags: {TAGS}")
        if any(int(v) < 1 for v in self.budgets.values()):
            raise ValueError(f"every field budget must be at least 1 token, got {self.budgets}")
        if self.action_decoding not in ACTION_DECODINGS:
            raise ValueError(f"unknown action_decoding {self.action_decoding!r}; expected one of {ACTION_DECODINGS}")
        if self.action_decoding != "argmax" and not self.grammar:
            raise ValueError("action_decoding 'expected' needs the grammar (grammar=True)")
        if not self.grammar and self.mode != "full":
            raise ValueError(f"mode {self.mode!r} needs the grammar (grammar=True); free generation is mode 'full' only")


@dataclass
class PolicyOutput:
    action: np.ndarray  # (action_dim,), unnormalized
    normalized_action: np.ndarray  # in [-1, 1], bin centers
    action_ids: list[int]
    reasoning: Reasoning
    text: str  # "TASK: ... ACTION: <action tokens>" — reused and edited parts included
    reused_text: str  # the part of `text` reused from an earlier step ("" if none)
    timings: dict[str, float]
    mode: str
    unnorm_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: action, reasoning fields, text, reused_text, timings, mode."""
        r = self.reasoning
        reasoning = {
            "task": r.task, "plan": r.plan,
            "visible_objects": [[name, list(box)] for name, box in r.visible_objects],
            "subtask_reasoning": r.subtask_reasoning, "subtask": r.subtask,
            "move_reasoning": r.move_reasoning, "move": r.move,
            "gripper_positions": [list(p) for p in r.gripper_positions],
        }
        return {
            "action": [float(x) for x in self.action],
            "reasoning": reasoning,
            "text": self.text,
            "reused_text": self.reused_text,
            "timings": dict(self.timings),
            "mode": self.mode,
            "unnorm_key": self.unnorm_key,
        }


def edit_values(fields: dict[str, Any]) -> dict[str, str]:
    """Reasoning field name -> value, as tag -> the exact text to write; checked."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        if name not in FIELD_TO_TAG:
            raise ValueError(f"cannot edit unknown reasoning field {name!r}; fields: {sorted(FIELD_TO_TAG)}")
        if value is None:
            continue
        if name == "visible_objects" and not isinstance(value, str):
            value = render_objects(Reasoning(visible_objects=list(value)).visible_objects)
        elif name == "gripper_positions" and not isinstance(value, str):
            value = render_points(Reasoning(gripper_positions=list(value)).gripper_positions)
        if not isinstance(value, str):
            raise ValueError(f"edit of {name!r} must be a string, got {type(value).__name__}")
        value = " ".join(value.split())
        if writes_tag_or_eos(value):
            raise ValueError(f"edit of {name!r} must not contain a reasoning tag or </s>: {value!r}")
        parsed = Reasoning.parse(f"{FIELD_TO_TAG[name]} {value}")
        if parsed.problems:
            raise ValueError(f"edit of {name!r} is not a well-formed value ({'; '.join(parsed.problems)}): {value!r}")
        out[FIELD_TO_TAG[name]] = value
    return out


class PolicySession:
    """One robot's episode state: reused reasoning, edits, the async worker's newest result."""

    def __init__(self, policy: "ECoTPolicy"):
        self._policy = policy
        self.edits: dict[str, str] = {}
        self.steps = 0
        self._high: str | None = None  # " TASK: ... SUBTASK: value" (text after the prompt)
        self._high_instruction: str | None = None
        self._high_age = 0
        self._last: tuple[str, list[int]] | None = None  # (instruction, ids) of the last step: the next one's draft
        self._tracked: tuple[str, list[float]] | None = None  # (instruction, its object's box centre) of the last step
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._job: tuple | None = None
        self._stop = False
        self._generation = 0  # bumped by reset/edit so a stale async result is dropped
        self.async_error: BaseException | None = None

    def reset(self) -> None:
        """A new episode: forget reused reasoning and edits."""
        with self._lock:
            self.edits = {}
            self.steps = 0
            self._last = None
            self._tracked = None
            self._forget()

    def edit(self, fields: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Override reasoning fields (``plan=..., subtask=..., move=..., visible_objects=[(name, box)], ...``);
        ``edit(None)`` clears all edits. Edits last until cleared or :meth:`reset`."""
        if fields is None and not kwargs:
            new = {}
        else:
            merged = dict(fields or {})
            merged.update(kwargs)
            new = dict(self.edits)
            for name in merged:
                if name in FIELD_TO_TAG:
                    new.pop(FIELD_TO_TAG[name], None)
            new.update(edit_values(merged))
        with self._lock:
            self.edits = new
            self._forget()

    def _forget(self) -> None:
        self._high = None
        self._high_instruction = None
        self._high_age = 0
        self._generation += 1

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Async mode: wait until the background reasoning has caught up (for tests and shutdown)."""
        return self._idle.wait(timeout)

    # ------------------------------------------------------------------ reuse and async state

    def _reusable(self, instruction: str, reuse_steps: int) -> str | None:
        with self._lock:
            if self._high is None or self._high_instruction != instruction or self._high_age >= reuse_steps:
                return None
            return self._high

    def _latest_async(self, instruction: str) -> str | None:
        with self._lock:
            return self._high if self._high is not None and self._high_instruction == instruction else None

    def _remember(self, high: str | None, instruction: str, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._high, self._high_instruction, self._high_age = high, instruction, 1

    def _submit(self, pixel_values: torch.Tensor, instruction: str, unnorm_key: str | None) -> None:
        """Async: hand the newest observation to the background worker (dropped if it is busy)."""
        if not self._idle.is_set():
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="ecot-async-reasoning", daemon=True)
            self._worker.start()
        with self._lock:
            self._job = (pixel_values, instruction, dict(self.edits), self._generation)
        self._idle.clear()
        self._wake.set()

    def _work(self) -> None:
        decoder = self._policy._background_decoder()
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                self._idle.set()
                return
            with self._lock:
                job, self._job = self._job, None
            if job is None:
                self._idle.set()
                continue
            pixel_values, instruction, edits, generation = job
            try:
                request = self._policy._request(pixel_values, instruction, 0, "", edits, stop_before=HIGH_LEVEL_END)
                result = decoder.decode([request])[0]
                self._remember(result.answer, instruction, generation)
            except BaseException as err:  # surfaced on the next step
                self.async_error = err
            finally:
                self._idle.set()


class ECoTPolicy:
    """An ECoT policy for a control loop. See the module docstring for the modes."""

    def __init__(self, model: Any, processor: Any = None, config: PolicyConfig | None = None, **overrides: Any):
        processor = processor if processor is not None else getattr(model, "processor", None)
        if processor is None:
            raise ValueError("ECoTPolicy needs the model's processor (tokenizer files in the checkpoint directory)")
        if config is None:
            config = PolicyConfig(**overrides)
        elif overrides:
            config = PolicyConfig(**{**asdict(config), **overrides})
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.decoder = self._make_decoder()
        self._session = PolicySession(self)
        self._batch_sessions: list[PolicySession] = []
        self.name = str(getattr(model.config, "vla_id", None) or getattr(model.config, "llm_backbone_id", "ecot"))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, **config: Any) -> "ECoTPolicy":
        """Load a checkpoint directory or hub id; ``config`` are :class:`PolicyConfig` fields (mode, reuse_steps, ...)."""
        from ecot.model import VLA

        settings = PolicyConfig(**config)  # validate before loading weights
        model = VLA.from_pretrained(path, dtype=dtype, device=device, progress=False)
        policy = cls(model, config=settings)
        policy.name = Path(str(path)).name or str(path)
        return policy

    def _make_decoder(self, tables: Any = None) -> ECoTDecoder:
        c = self.config
        decoder = ECoTDecoder(self.model, self.processor, budgets=c.budgets, grammar=c.grammar, max_objects=c.max_objects,
                              max_points=c.max_points, compile=c.compile, max_free_tokens=c.max_new_tokens,
                              action_dim=self.action_dim, tables=tables)
        return decoder

    def _background_decoder(self) -> ECoTDecoder:
        return self._make_decoder(tables=self.decoder.tables)

    # ------------------------------------------------------------------ facts

    @property
    def unnorm_keys(self) -> list[str]:
        return list(self.processor.norm_stats.keys())

    def _stats(self, unnorm_key: str | None):
        key = unnorm_key if unnorm_key is not None else self.config.unnorm_key
        if not self.unnorm_keys and key is None:
            return None, None
        key = self.processor.norm_stats.resolve_key(key)  # KeyError lists the valid keys
        return key, self.processor.norm_stats.get(key).action

    @property
    def action_dim(self) -> int:
        """The default statistics' action size (7 when there are none or several to choose from)."""
        try:
            _, stats = self._stats(None)
        except KeyError:
            return 7
        return stats.dim if stats is not None else 7

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "action_dim": self.action_dim,
            "unnorm_keys": self.unnorm_keys,
            "mode": self.config.mode,
            "reuse_steps": self.config.reuse_steps,
            "image_size": int(self.processor.image_size),
            "prompt_style": self.processor.prompt_style,
            "grammar": self.config.grammar,
        }

    # ------------------------------------------------------------------ sessions

    def new_session(self) -> PolicySession:
        """State for one more robot (reuse, async and edits are per session)."""
        return PolicySession(self)

    def reset(self) -> None:
        """A new episode for the default session(s)."""
        self._session.reset()
        for s in self._batch_sessions:
            s.reset()

    def edit(self, fields: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Edit the reasoning of the default session (and of every step_batch session)."""
        self._session.edit(fields, **kwargs)
        for s in self._batch_sessions:
            s.edit(fields, **kwargs)

    def close(self) -> None:
        for s in [self._session, *self._batch_sessions]:
            s.close()

    # ------------------------------------------------------------------ stepping

    def step(self, image: Any, instruction: str, unnorm_key: str | None = None, session: PolicySession | None = None,
             on_text: Callable[[str], None] | None = None) -> PolicyOutput:
        """Reason (as the mode says) and act on one observation."""
        callback = None if on_text is None else (lambda i, text: on_text(text))
        return self.step_batch([image], [instruction], unnorm_key, [session or self._session], callback)[0]

    def step_batch(self, images: Sequence[Any], instructions: Sequence[str] | str, unnorm_key: str | None = None,
                   sessions: Sequence[PolicySession] | None = None,
                   on_text: Callable[[int, str], None] | None = None) -> list[PolicyOutput]:
        """Several observations (robots, envs) in one batched forward; greedy results equal :meth:`step`'s."""
        t0 = time.perf_counter()
        images = list(images)
        if isinstance(instructions, str):
            instructions = [instructions] * len(images)
        instructions = list(instructions)
        if not images or len(images) != len(instructions):
            raise ValueError(f"step_batch needs one instruction per image, got {len(images)} images and {len(instructions)} instructions")
        if sessions is None:
            while len(self._batch_sessions) < len(images):
                self._batch_sessions.append(PolicySession(self))
            sessions = self._batch_sessions[: len(images)]
        elif len(sessions) != len(images):
            raise ValueError(f"step_batch got {len(sessions)} sessions for {len(images)} images")
        for image in images:
            check_image(image)
        for instruction in instructions:
            check_instruction(instruction)
        key, stats = self._stats(unnorm_key)
        for s in sessions:
            if s.async_error is not None:
                err, s.async_error = s.async_error, None
                raise RuntimeError(f"the background reasoning worker failed: {err}") from err
        pixels = [self.processor.image_transform(im) for im in images]
        t1 = time.perf_counter()

        mode = self.config.mode
        requests, reused = [], []
        for i, (pv, instruction, session) in enumerate(zip(pixels, instructions, sessions)):
            high = None
            if mode == "reuse":
                high = session._reusable(instruction, self.config.reuse_steps)
            elif mode == "async":
                high = session._latest_async(instruction)
            callback = None if on_text is None else (lambda text, i=i: on_text(i, text))
            if mode == "no-reasoning":
                request = self._request(pv, instruction, None, "", {}, on_text=callback)
            elif high is not None:
                low_edits = {t: v for t, v in session.edits.items() if TAGS.index(t) >= HIGH_LEVEL_END}
                request = self._request(pv, instruction, HIGH_LEVEL_END, high, low_edits, on_text=callback)
            else:
                request = self._request(pv, instruction, 0, "", dict(session.edits), on_text=callback)
            if self.config.draft and session._last is not None and session._last[0] == instruction:
                request.draft = session._last[1]
            requests.append(request)
            reused.append(high or "")
        timings: dict[str, float] = {}
        if mode != "no-reasoning":
            self._locator_edits(requests, pixels, instructions, timings, sessions)
            if self._action_follows_move():
                self._bind_action_to_move(requests, stats)
        results = self.decoder.decode(requests, timings)
        t2 = time.perf_counter()

        outputs = []
        for i, (result, session, instruction) in enumerate(zip(results, sessions, instructions)):
            out = self._output(result, reused[i], key, stats)
            self._after_step(session, instruction, result, reused[i], pixels[i], key)
            total = (time.perf_counter() - t0) * 1000
            out.timings = {
                "preprocess_ms": (t1 - t0) * 1000,
                "prefill_ms": timings.get("prefill_ms", 0.0),
                "decode_ms": timings.get("decode_ms", 0.0),
                "move_head_ms": timings.get("move_head_ms", 0.0),  # its first pass (models with a move head)
                "total_ms": total,
                "batch": len(images),
                "tokens_decoded": result.tokens_generated,
                "tokens_forced": result.tokens_forced,
                "tokens_reused": len(self.processor.tokenizer(reused[i], add_special_tokens=False)["input_ids"]) if reused[i] else 0,
                "forwards": result.forwards,
                "forwards_ahead": result.forwards_ahead,
                "forwards_discarded": result.forwards_discarded,
                "tokens_from_draft": result.tokens_from_draft,
            }
            outputs.append(out)
        del t2
        return outputs

    def _action_follows_move(self) -> bool:
        on = self.config.action_follows_move
        return bool(getattr(self.model, "move_head", None) is not None if on is None else on)

    def _bind_action_to_move(self, requests: list[DecodeRequest], stats: Any) -> None:
        """Each request whose MOVE is fixed in advance gets the action bins that agree with it."""
        from ecot.policy.move_action import allowed_action_bins

        values = self.decoder.tables.action_values.cpu().numpy()
        for r in requests:
            if MOVE in r.edits and stats is not None:
                r.action_bins = allowed_action_bins(r.edits[MOVE], stats, values)

    def _writes_locator_objects(self) -> bool:
        locator = getattr(self.model, "locator", None)
        return bool(self.config.locator_objects and locator is not None and locator.spec.names)

    def _locator_edits(self, requests: list[DecodeRequest], pixels: list[torch.Tensor], instructions: list[str],
                       timings: dict[str, float], sessions: Sequence[PolicySession]) -> None:
        """What the locator and the move head write into each request's chain, as edits (hand edits win):

        * VISIBLE OBJECTS: the locator's named findings (``PolicyConfig.locator_objects``);
        * MOVE: the move head's choice (ecot.model.move_head). A first pass writes the chain up to MOVE, whose
          MOVE REASONING is then restated to name the head's move, so the chain agrees with itself
          (docs/quality.md, round fourteen)."""
        from ecot.annotate.template import restate_move
        from ecot.model.locator import named_objects

        model = self.model
        head = getattr(model, "move_head", None)
        objects_at = TAGS.index(VISIBLE_OBJECTS)
        writes_objects = self._writes_locator_objects()
        write_objects = {i for i, r in enumerate(requests) if writes_objects
                         and VISIBLE_OBJECTS not in r.edits and r.first_field is not None and r.first_field <= objects_at}
        choose_move = [i for i, r in enumerate(requests) if head is not None and MOVE not in r.edits
                       and r.first_field is not None]
        todo = sorted(write_objects | set(choose_move))
        if not todo:
            return
        t0 = time.perf_counter()
        with torch.no_grad():
            batch = torch.stack([pixels[i] for i in todo]).to(device=model.device, dtype=model.projector.fc1.weight.dtype)
            findings = model.locator.find(model.locator(batch))
        texts = [instructions[i] for i in todo]
        mains = self._instruction_objects(findings, texts, [sessions[i] for i in todo])
        if write_objects:
            for i, objects in zip(todo, named_objects(findings, model.locator.spec, texts, mains)):
                if i in write_objects and objects:  # nothing found: the language model writes the field
                    requests[i].edits = {**requests[i].edits, **edit_values({"visible_objects": objects})}
        if choose_move:
            chosen = dict(zip(todo, head.choose(findings, texts, mains)))
            first = self.decoder.decode([DecodeRequest(prompt=requests[i].prompt, pixel_values=requests[i].pixel_values,
                                                       first_field=requests[i].first_field,
                                                       forced_prefix=requests[i].forced_prefix, edits=requests[i].edits,
                                                       stop_before=TAGS.index(MOVE)) for i in choose_move], {})
            for i, result in zip(choose_move, first):
                requests[i].edits = {**requests[i].edits, MOVE: chosen[i]}
                if MOVE_REASONING not in requests[i].edits:
                    own = Reasoning.parse(result.answer).move_reasoning or ""
                    if own:
                        requests[i].edits[MOVE_REASONING] = restate_move(own, chosen[i])
            timings["move_head_ms"] = (time.perf_counter() - t0) * 1000  # the locator's pass and the head's first pass

    def _instruction_objects(self, findings: Any, instructions: list[str], sessions: list[PolicySession]) -> list[int | None]:
        """Each sample's found object that its instruction names (ecot.model.locator.instruction_object), tracked
        from the session's previous step for the same instruction when ``track_object`` is on; remembers it."""
        from ecot.model.locator import box_centres, instruction_object

        words = self.model.locator.spec.words
        mains = []
        for b, (instruction, session) in enumerate(zip(instructions, sessions)):
            tracked = session._tracked if self.config.track_object else None
            previous = tracked[1] if tracked is not None and tracked[0] == instruction else None
            main = instruction_object(findings.word_probs[b], findings.scores[b], words, instruction,
                                      boxes=findings.boxes[b], previous=previous)
            if main is not None:
                session._tracked = (instruction, box_centres(findings.boxes[b, main]).tolist())
            mains.append(main)
        return mains

    def _request(self, pixel_values: torch.Tensor, instruction: str, first_field: int | None, prefix: str,
                 edits: dict[str, str], stop_before: int | None = None, on_text: Callable | None = None) -> DecodeRequest:
        prompt = conditioning_prompt(instruction, self.processor.prompt_style)
        return DecodeRequest(prompt=prompt, pixel_values=pixel_values, first_field=first_field, forced_prefix=prefix,
                             edits=edits, stop_before=stop_before, on_text=on_text)

    def _output(self, result: DecodeResult, reused: str, key: str | None, stats: Any) -> PolicyOutput:
        tokenizer, action_tokenizer = self.processor.tokenizer, self.processor.action_tokenizer
        if not self.config.grammar:
            from ecot.policy.free import _action_ids_after_tag, _continuation_text
            from ecot.prompts import REASONING_START

            prompt_ids = result.ids[: result.prefill_tokens]
            text = _continuation_text(tokenizer, prompt_ids, result.free_ids, REASONING_START)
            action_ids = _action_ids_after_tag(tokenizer, action_tokenizer, result.free_ids, self.action_dim, text)
        else:
            action_ids = result.action_ids
            text = result.answer.lstrip() + tokenizer.decode(action_ids)
        normalized = action_tokenizer.decode(action_ids)
        if self.config.grammar and self.config.action_decoding == "expected":
            normalized = np.asarray(result.action_expected, dtype=np.float64)
        if stats is None:
            warnings.warn("this model has no norm_stats: returning the normalized action in [-1, 1]", stacklevel=3)
            action = normalized.copy()
        else:
            action = stats.unnormalize(normalized)
        return PolicyOutput(action=action, normalized_action=normalized, action_ids=list(action_ids),
                            reasoning=Reasoning.parse(text), text=text, reused_text=reused.strip(), timings={},
                            mode=self.config.mode, unnorm_key=key)

    def _after_step(self, session: PolicySession, instruction: str, result: DecodeResult, reused: str,
                    pixel_values: torch.Tensor, key: str | None) -> None:
        session.steps += 1
        session._last = (instruction, result.ids)
        mode = self.config.mode
        if mode == "reuse":
            if reused:
                with session._lock:
                    session._high_age += 1
            else:
                high = prefix_before(result.answer, MOVE_REASONING)
                session._remember(high.rstrip() if high else None, instruction, session._generation)
            move = Reasoning.parse(result.answer).move
            if any(word in move for word in self.config.refresh_moves):
                with session._lock:
                    session._high = None  # a subtask ended: think again next step
        elif mode == "async":
            if not reused:
                high = prefix_before(result.answer, MOVE_REASONING)
                session._remember(high.rstrip() if high else None, instruction, session._generation)
            session._submit(pixel_values, instruction, key)
