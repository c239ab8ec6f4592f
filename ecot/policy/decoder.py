"""Grammar-constrained ECoT decoding of a batch of observations with jump-forward forced text.

Each sequence walks the ECoT fields in order. Inside a field the model chooses every token, among
those the field's grammar (:mod:`ecot.policy.grammar`) allows; a field ends when the model's best
allowed token is EOS or the first token of any later tag (or its token budget is spent), and then the
*whole* next tag — plus any edited or reused field values after it — is written at once: the text
is re-tokenized with the prompt, the cache is rolled back to where the new ids differ from the old
ones and the new ids are prefilled in one forward pass. So the forced ids are exactly the ids the
tokenizer gives for the full text, as in training. After ``ACTION:`` exactly ``action_dim`` action
ids are chosen, then the sequence ends (EOS is implied).

With ``grammar=False`` the model writes freely (greedy), as :meth:`VLA.predict_action` does,
until EOS or ``max_new_tokens``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ecot.policy.engine import KVCache, LlamaEngine
from ecot.policy.grammar import FREE, OBJECTS, grammar_for, is_structural_text, token_texts, writes_tag_or_eos
from ecot.reasoning import ACTION, REASONING_TAGS

TAGS = list(REASONING_TAGS)  # TASK ... GRIPPER POSITION; ACTION follows
DEFAULT_BUDGETS = {
    "TASK:": 48,
    "PLAN:": 96,
    "VISIBLE OBJECTS:": 160,
    "SUBTASK REASONING:": 64,
    "SUBTASK:": 40,
    "MOVE REASONING:": 64,
    "MOVE:": 24,
    "GRIPPER POSITION:": 96,
}
SLACK_PER_FIELD = 48  # closing a structured field after its budget, and the tags themselves
RANK_FIRST = 8  # candidates ranked (and, running ahead, read back) before the rest are looked at
CHUNK = 32  # forced text of up to this many ids goes through the compiled chunk step (on a GPU)
DRAFT_MAX = 16  # ids of a draft checked in one forward
DRAFT_MATCH = 3  # a draft continues where its last ids match the sequence's last DRAFT_MATCH ids
DRAFT_WINDOW = 48  # ... within this many ids of where the last match put it


@dataclass
class DecodeRequest:
    """One sequence to decode."""

    prompt: str  # the conditioning prompt, ending in "ASSISTANT:" / "Out:"
    pixel_values: torch.Tensor  # [C, S, S]
    first_field: int | None  # index in TAGS of the first field to write; None: straight to ACTION
    forced_prefix: str = ""  # text after the prompt, before the first field's tag (e.g. reused reasoning)
    edits: dict[str, str] = field(default_factory=dict)  # tag -> value text to write instead of the model
    stop_before: int | None = None  # index in TAGS: stop when this tag is reached (no action)
    on_text: Callable[[str], None] | None = None  # called with the answer text as it grows
    # The ids of an earlier decode (e.g. the previous control step's ``DecodeResult.ids``), checked as a
    # draft: where the sequence so far matches it, its next ids are fed in the same forward as the
    # chosen one and kept as long as the model would have chosen them anyway. Greedy choices are
    # the same as without a draft (up to floating-point differences between wide and one-id forwards).
    draft: list[int] | None = None
    # Per action dimension, the bin indices (0 .. n_bins - 1) its action id may take; None: any
    # (ecot.policy.move_action: the bins that agree with a MOVE fixed in advance).
    action_bins: list[Any] | None = None


@dataclass
class DecodeResult:
    answer: str  # text after the prompt: " TASK: ... ACTION: " (or up to stop_before)
    action_ids: list[int]
    ids: list[int]  # the ids fed to the model: BOS, prompt, answer and every action id but the last
    tokens_generated: int = 0  # tokens the model chose (reasoning and action)
    tokens_forced: int = 0  # tokens written by jump-forward after the prefill
    prefill_tokens: int = 0
    forwards: int = 0
    forwards_ahead: int = 0  # steps launched on the device's guess before the host chose (kept or discarded)
    forwards_discarded: int = 0  # run-ahead steps thrown away because the host chose another id
    free_ids: list[int] = field(default_factory=list)  # grammar off: the ids the model wrote (EOS included)
    tokens_from_draft: int = 0  # of tokens_generated, those checked in a draft's forward (no forward of their own)
    action_expected: list[float] = field(default_factory=list)  # per dimension: the mean normalized value under
    # the model's distribution over the action bins (given the greedy ids before it)


class TokenTables:
    """Per-tokenizer facts the grammar needs, computed once: each id's text, the candidate sets,
    the first token of every tag after a word."""

    def __init__(self, tokenizer: Any, action_tokenizer: Any, vocab_rows: int, device: torch.device):
        self.tokenizer = tokenizer
        self.action_tokenizer = action_tokenizer
        self.texts = token_texts(tokenizer, vocab_rows, action_tokenizer.first_id)
        self.n_tokens = min(len(tokenizer), vocab_rows)  # embedding rows past the tokenizer are padding
        text_mask = torch.tensor([t is not None for t in self.texts], dtype=torch.bool)
        self.text_ids = torch.nonzero(text_mask).flatten().to(device)
        struct = [i for i, t in enumerate(self.texts) if is_structural_text(t)]
        self.struct_ids = torch.tensor(struct, dtype=torch.long, device=device)
        self.action_lo = int(action_tokenizer.first_id)
        self.action_hi = int(action_tokenizer.last_id) + 1
        # The normalized value each action id stands for (its bin center), for expected-value decoding.
        self.action_values = torch.as_tensor(action_tokenizer.decode(np.arange(self.action_lo, self.action_hi)),
                                             dtype=torch.float32, device=device)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        first = {tag: self._first_token_after_word(" " + tag) for tag in TAGS + [ACTION]}
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        # Field f ends when the model's best allowed token starts any later tag or is EOS: the model
        # is done with this field (the grammar still writes the *next* tag, so order is kept).
        ender_ids = [sorted({first[t] for t in (TAGS + [ACTION])[f + 1 :]} | set(eos)) for f in range(len(TAGS))]
        self.enders = [torch.tensor(ids, device=device) for ids in ender_ids]
        self.ender_sets = [frozenset(ids) for ids in ender_ids]  # the same, for the host (no device read per token)
        # A dummy action (the middle bin), to find the ids before the action ids after "ACTION:".
        self.dummy_action_text = tokenizer.decode([self.action_lo + action_tokenizer.n_bins // 2] * 2)
        self._rank_ids: dict[tuple[bool, int | None], torch.Tensor] = {}
        self._allowed: dict[tuple, torch.Tensor] = {}

    def rank_ids(self, structural: bool, field: int | None) -> torch.Tensor:
        """The ids a field's choice is ranked over: the state's candidate set, plus the field's
        enders where it may end (``field`` None: it may not)."""
        key = (structural, field)
        ids = self._rank_ids.get(key)
        if ids is None:
            ids = self.struct_ids if structural else self.text_ids
            if field is not None:
                ids = torch.cat([ids, self.enders[field]])
            self._rank_ids[key] = ids
        return ids

    def allowed_ids(self, grammar: Any, state: tuple, closing: bool, field: int, accepting: bool) -> torch.Tensor:
        """In a structural state, exactly the ids the grammar lets the model choose there (and the
        field's enders where it may end): its best one is the host's choice. Computed once per state."""
        key = (grammar.kind, getattr(grammar, "max_objects", None), getattr(grammar, "max_numbers", None), state,
               closing, field if accepting else None)
        ids = self._allowed.get(key)
        if ids is None:
            texts = self.texts
            ok = [i for i in self.struct_ids.tolist() if grammar.feed(state, texts[i], closing) is not None]
            if accepting:
                ok += [i for i in self.ender_sets[field] if i not in ok]
            ids = torch.tensor(ok, dtype=torch.long, device=self.struct_ids.device)
            self._allowed[key] = ids
        return ids

    def _first_token_after_word(self, text: str) -> int:
        head = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        ids = self.tokenizer("a" + text, add_special_tokens=False)["input_ids"]
        if ids[: len(head)] != head or len(ids) <= len(head):
            raise ValueError(f"the tokenizer splits {text!r} in an unexpected way")
        return int(ids[len(head)])

    def encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids


def _tag(f: int) -> str:
    return TAGS[f] if f < len(TAGS) else ACTION


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Sequence:
    """The decoding state of one sequence."""

    def __init__(self, req: DecodeRequest, tables: TokenTables, budgets: dict[str, int], grammar: bool,
                 max_objects: int, max_points: int, action_dim: int, max_free_tokens: int, ignore_eos: bool):
        self.req = req
        self.action_dim = action_dim
        self.max_free_tokens = max_free_tokens
        self.ignore_eos = ignore_eos
        self.free_ids: list[int] = []
        self.tables = tables
        self.budgets = budgets
        self.use_grammar = grammar
        self.max_objects, self.max_points = max_objects, max_points
        self.answer = ""
        self.ids: list[int] = []
        self.fed = 0  # ids in the cache
        self.pending: list[int] = []
        self.rollback_to: int | None = None  # ids to keep in the cache before feeding `pending`
        self.field: int | None = None  # index in TAGS of the field being written; len(TAGS) = action
        self.grammar = None
        self.state: tuple = ()
        self.value = ""
        self.field_tokens = 0
        self.action_ids: list[int] = []
        self.action_expected: list[float] = []
        self.done = False
        self.generated = 0
        self.forced = 0
        self.draft_offset = 0  # index in the draft minus index in ids, at the last match
        self.from_draft = 0

    # ------------------------------------------------------------------ forced text

    def start(self) -> None:
        """The prompt, the forced prefix and everything forced up to the first field the model writes."""
        req = self.req
        first = len(TAGS) if req.first_field is None else req.first_field
        self._force(req.forced_prefix + " " + _tag(first), first)
        self.rollback_to = None
        self.forced = 0  # the prefill is counted apart

    def _force(self, text: str, f: int) -> None:
        """Write ``text`` (which ends with the tag of field ``f``) and the edited fields after it."""
        edits, stop = self.req.edits, self.req.stop_before
        while f < len(TAGS) and TAGS[f] in edits:
            if stop is not None and f + 1 >= stop:
                self._finish(text + " " + edits[TAGS[f]])
                return
            text += " " + edits[TAGS[f]] + " " + _tag(f + 1)
            f += 1
        self.answer += text
        full = self.req.prompt + self.answer
        if f == len(TAGS):  # ACTION: the ids up to the first action id of a dummy action
            ids = self.tables.encode(full + " " + self.tables.dummy_action_text)
            lo, hi = self.tables.action_lo, self.tables.action_hi
            first_action = next(i for i in range(len(ids) - 1, -1, -1) if not lo <= ids[i] < hi) + 1
            new_ids = ids[:first_action]
            self.answer += " "
        else:
            new_ids = self.tables.encode(full)
        keep = _common_prefix(self.ids, new_ids)
        if keep < self.fed:
            self.rollback_to = keep
            self.fed = keep
        self.pending = new_ids[self.fed :]
        self.forced += len(self.pending)
        self.ids = new_ids
        self._enter(f)
        self._emit()

    def _finish(self, text: str) -> None:
        self.answer += text
        self.done = True
        self._emit()

    def _enter(self, f: int) -> None:
        self.field = f
        if f < len(TAGS):
            self.grammar = grammar_for(TAGS[f], self.max_objects, self.max_points)
            self.state = self.grammar.start()
        self.value = ""
        self.field_tokens = 0

    def _end_field(self, completion: str = "") -> None:
        f = self.field
        if self.req.stop_before is not None and f + 1 >= self.req.stop_before:
            self._finish(completion)
        else:
            self._force(completion + " " + _tag(f + 1), f + 1)

    def _emit(self) -> None:
        if self.req.on_text is not None:
            self.req.on_text(self.answer)

    # ------------------------------------------------------------------ the model's choices

    def consume(self, logits: torch.Tensor, prefetched: tuple[list[int], float] | None = None) -> None:
        """Choose what follows from the logits at the last fed position. ``prefetched`` is what
        :meth:`prefetch` computed from the same logits and the host already read: the best ranked ids
        of a field's choice, or an action's id and expected value."""
        if self.field == len(TAGS):
            self._choose_action(logits, prefetched)
        elif not self.use_grammar:
            self._choose_free(logits)
        else:
            self._choose_in_field(logits, prefetched[0] if prefetched is not None else None)

    # ------------------------------------------------------------------ drafts

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` ids of the request's draft that would follow ``ids``: where the draft's last
        ``DRAFT_MATCH`` ids equal those of ``ids``, nearest to where the last match was (one phrase,
        such as an object's name, recurs in several fields)."""
        draft, ids, n = self.req.draft, self.ids, DRAFT_MATCH
        if not draft or k < 1 or len(ids) < n or self.done:
            return []
        tail = ids[-n:]
        expected = len(ids) + self.draft_offset
        best = None
        for i in range(max(n, expected - DRAFT_WINDOW), min(len(draft) - 1, expected + DRAFT_WINDOW) + 1):
            if draft[i - n : i] == tail and (best is None or abs(i - expected) < abs(best - expected)):
                best = i
        if best is None:
            return []
        self.draft_offset = best - len(ids)
        return draft[best : best + k]

    # ------------------------------------------------------------------ run-ahead

    def plan(self) -> tuple | None:
        """How the next choice will be made, known before its logits are read: ``("action",)``, or
        ``("field", rank_ids, guess_ids)`` (the ids ranked, and those whose best one is the likely
        choice); None where the next id is not the model's choice or ends the sequence."""
        if self.done or not self.use_grammar or self.field is None:
            return None
        if self.field == len(TAGS):
            return ("action",) if len(self.action_ids) < self.action_dim - 1 else None
        g, tables = self.grammar, self.tables
        closing = self.field_tokens >= self.budgets.get(TAGS[self.field], 64)
        if g.must_end(self.state, closing):
            return None
        accepting = g.accepting(self.state)
        structural = g.structural(self.state)
        rank = tables.rank_ids(structural, self.field if accepting else None)
        guess = tables.allowed_ids(g, self.state, closing, self.field, accepting) if structural else rank
        return ("field", rank, guess) if len(guess) else None

    def prefetch(self, plan: tuple, logits: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        """On the device, from this sequence's ``logits``: ``[guess, top ranked ids...]`` (``top + 1``
        ids, -1 padded) and the action's expected value (0 for a field)."""
        if plan[0] == "action":
            lo, hi = self.tables.action_lo, self.tables.action_hi
            scores = self._action_scores(logits[lo:hi].float())
            token = lo + torch.argmax(scores)
            expected = torch.softmax(scores, dim=0) @ self.tables.action_values.to(scores.device)
            return token.view(1).expand(top + 1), expected
        _, rank, guess = plan
        # index_select only: indexing with a 0-dim device tensor would read it back (a device sync),
        # and the whole point is that the host does not wait here.
        k = min(top, len(rank))
        ranked = rank.index_select(0, torch.topk(logits.index_select(0, rank), k).indices)
        best = guess.index_select(0, torch.argmax(logits.index_select(0, guess)).view(1))
        ids = torch.cat([best, ranked, torch.full((top - k,), -1, dtype=ranked.dtype, device=ranked.device)])
        return ids, torch.zeros((), dtype=torch.float32, device=logits.device)

    def _action_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """The next action dimension's bin scores, those outside the request's ``action_bins`` at -inf."""
        bins = self.req.action_bins
        k = len(self.action_ids)
        if not bins or k >= len(bins) or bins[k] is None:
            return scores
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep[torch.as_tensor(bins[k], dtype=torch.long, device=scores.device)] = True
        return scores.masked_fill(~keep, float("-inf"))

    def _choose_action(self, logits: torch.Tensor, prefetched: tuple[list[int], float] | None = None) -> None:
        if prefetched is not None:
            token, expected = int(prefetched[0][0]), float(prefetched[1])
        else:
            lo, hi = self.tables.action_lo, self.tables.action_hi
            scores = self._action_scores(logits[lo:hi].float())
            token = lo + int(torch.argmax(scores))
            values = self.tables.action_values.to(scores.device)
            expected = float(torch.softmax(scores, dim=0) @ values)
        self.action_ids.append(token)
        self.action_expected.append(expected)
        self.generated += 1
        if len(self.action_ids) >= self.action_dim:
            self.done = True
        else:
            self.pending = [token]
            self.ids.append(token)

    def _choose_free(self, logits: torch.Tensor) -> None:
        self.take_free(int(logits.argmax()))  # over every row, as generate does (padded rows included)

    def take_free(self, token: int) -> None:
        """Free generation: ``token`` (the greedy id) is what the model wrote."""
        self.generated += 1
        self.free_ids.append(token)
        eos = self.tables.tokenizer.eos_token_id
        if (token == eos and not self.ignore_eos) or len(self.free_ids) >= self.max_free_tokens:
            self.done = True
            return
        self.ids.append(token)
        self.pending = [token]

    def _choose_in_field(self, logits: torch.Tensor, first: list[int] | None = None) -> None:
        g = self.grammar
        tag = TAGS[self.field]
        closing = self.field_tokens >= self.budgets.get(tag, 64)
        if g.must_end(self.state, closing):
            self._end_field()
            return
        accepting = g.accepting(self.state)
        ender_set = self.tables.ender_sets[self.field] if accepting else frozenset()
        texts = self.tables.texts
        check_tags = g.kind in (FREE, OBJECTS)
        for token in self._ranked(logits, g.structural(self.state), accepting, first):
            if token in ender_set:
                self._end_field()
                return
            piece = texts[token]
            if piece is None:
                continue
            new_state = g.feed(self.state, piece, closing)
            if new_state is None or (check_tags and writes_tag_or_eos(self.value + piece)):
                continue
            self.state = new_state
            self.value += piece
            self.answer += piece
            self.field_tokens += 1
            self.generated += 1
            self.ids.append(token)
            self.pending = [token]
            self._emit()
            return
        self._end_field(completion=g.completion(self.state))  # nothing allowed: close the structure

    def _ranked(self, logits: torch.Tensor, structural: bool, accepting: bool, first: list[int] | None = None):
        """Candidate ids, best first: a few from the top, then (rarely needed) all of them. ``first``:
        the top ones already read from the device (:meth:`prefetch`, the same ranking)."""
        ids = self.tables.rank_ids(structural, self.field if accepting else None)
        seen = 0
        if first is not None:
            first = [i for i in first if i >= 0]
            yield from first
            seen = len(first)
        scores = None
        for k in (RANK_FIRST, 64, len(ids)):
            k = min(k, len(ids))
            if k <= seen:
                continue
            if scores is None:
                scores = logits[ids]
            top = torch.topk(scores, k).indices[seen:k]
            yield from ids[top].tolist()
            seen = k


class ECoTDecoder:
    """Decodes batches of :class:`DecodeRequest` with one :class:`LlamaEngine` and a reusable cache."""

    def __init__(self, model: Any, processor: Any, budgets: dict[str, int] | None = None, grammar: bool = True,
                 max_objects: int = 12, max_points: int = 16, compile: bool | str = False, max_free_tokens: int = 1024,
                 ignore_eos: bool = False, action_dim: int = 7, tables: TokenTables | None = None):
        self.model = model
        self.processor = processor
        self.engine = LlamaEngine(model.language_model)
        self.tables = tables or TokenTables(processor.tokenizer, processor.action_tokenizer, self.engine.vocab_rows,
                                            self.engine.device)
        self.action_dim = int(action_dim)
        self.max_free_tokens = int(max_free_tokens)
        self.ignore_eos = ignore_eos
        self.budgets = dict(DEFAULT_BUDGETS if budgets is None else budgets)
        self.grammar = grammar
        self.max_objects, self.max_points = max_objects, max_points
        self.compile = compile
        # Forced text of up to this many ids per sequence goes through the compiled one-token step
        # (on a GPU a few replays cost less than one launch-bound eager forward); longer text is prefilled.
        self.compiled_feed_max = 4 if self.engine.device.type == "cuda" else 1
        self.pipeline = True  # free generation with the compiled step runs ahead of the host
        # Grammar decoding with the compiled step runs one step ahead of the host (see _run_ahead);
        # on a CPU there is no device to keep busy, so it only costs the guesses.
        self.run_ahead = self.engine.device.type == "cuda"
        # Forced text of 2 .. chunk_size ids through the compiled chunk step (0: off). Off on a CPU:
        # there an eager forward is not launch-bound, and the chunk computes its whole padded width.
        self.chunk_size = CHUNK if self.engine.device.type == "cuda" else 0
        self.draft_max = DRAFT_MAX  # 0: drafts are ignored
        self._caches: dict[int, KVCache] = {}

    def _cache(self, batch: int, need: int) -> KVCache:
        cache = self._caches.get(batch)
        if cache is None or cache.max_len < need:
            size = max(256, -(-need // 256) * 256)
            cache = self.engine.new_cache(batch, size)
            self._caches[batch] = cache
        cache.reset()
        return cache

    def _capacity(self, seqs: list[_Sequence], patches: int) -> int:
        if not self.grammar:
            return patches + max(len(s.ids) for s in seqs) + self.max_free_tokens + 8

        def need(s: _Sequence) -> int:
            # Fields before the first one written (reused) or edited are already in s.ids: no budget for them.
            first = len(TAGS) if s.req.first_field is None else s.req.first_field
            later = TAGS[first:]
            edited = sum(len(v) + 8 for t, v in s.req.edits.items() if t in later)  # >= its tokens
            return len(s.ids) + edited + sum(self.budgets.get(t, 0) for t in later if t not in s.req.edits)

        # A capacity that does not depend on what is reused keeps the cache (and a compiled step's
        # shapes) the same from step to step.
        return patches + max(need(s) for s in seqs) + SLACK_PER_FIELD * (len(TAGS) + 1) + 16

    @property
    def _backend(self) -> str:
        """The torch.compile backend of ``compile`` (True: inductor; "none": the uncompiled static step)."""
        return self.compile if isinstance(self.compile, str) else "inductor"

    def _pipelined(self, seqs: list[_Sequence]) -> bool:
        """Free greedy generation with the compiled step can run ahead of the host (see below)."""
        return bool(self.compile) and not self.grammar and self.pipeline and all(
            not s.done and s.field != len(TAGS) for s in seqs)

    def _decode_free_pipelined(self, seqs: list[_Sequence], cache: KVCache, logits: torch.Tensor) -> int:
        """Free greedy decoding that keeps the device busy: the next step is launched with the argmax
        still on the device, and the host reads that id (for EOS and the token count) while the step
        runs, instead of the device waiting for the host between tokens. Greedy ids are what
        :meth:`_Sequence.take_free` would get from each row's argmax; the step launched after the
        last token is wasted. Returns the forwards run."""
        engine = self.engine
        backend = self._backend
        cuda = engine.device.type == "cuda"
        forwards = 0
        while True:
            guess = logits.argmax(dim=-1)  # [B], on the device
            if cuda:
                host = torch.empty(guess.shape, dtype=guess.dtype, pin_memory=True)
                host.copy_(guess, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record()
            following = engine.compiled_step(cache, guess, backend)  # runs while the host reads `guess`
            forwards += 1
            if cuda:
                ready.synchronize()
                tokens = host.tolist()
            else:
                tokens = guess.tolist()
            for s, token in zip(seqs, tokens):
                if not s.done:
                    s.take_free(token)
                    s.fed += len(s.pending)  # the id just fed is the one taken (finished rows ride along)
                    s.pending = []
            if all(s.done for s in seqs):
                return forwards
            logits = following

    def _can_run_ahead(self, seqs: list[_Sequence], active: list[int]) -> bool:
        return bool(self.compile) and self.grammar and self.run_ahead and len(active) == len(seqs)

    def _run_ahead(self, seqs: list[_Sequence], cache: KVCache, logits: torch.Tensor) -> tuple[torch.Tensor | None, int, int]:
        """Grammar decoding that keeps the device busy while the host runs the grammar.

        For each sequence the host knows, before reading the logits, how the next id will be
        chosen (:meth:`_Sequence.plan`). It queues on the device the best ids of that choice and the
        *guess* (the best id the grammar allows: exact in digits and brackets, the best text id
        elsewhere), queues a copy of them to the host, and then the compiled step on the guesses.
        While that step runs, the host reads the copy and makes its choice as it always does
        (:meth:`_Sequence.consume`, the same ranking). If every sequence chose its guess the step
        was the next one; else it is undone (each sequence's length set back) and the caller feeds
        what was chosen. The ids are exactly the step-by-step loop's. Returns (the logits for the
        next choice, or None when the caller must feed the sequences' pending ids; forwards run;
        forwards discarded)."""
        engine = self.engine
        cuda = engine.device.type == "cuda"
        forwards = 0
        while True:
            plans = [s.plan() for s in seqs]
            if any(p is None for p in plans):
                return logits, forwards, 0
            packed = [s.prefetch(p, logits[b], RANK_FIRST) for b, (s, p) in enumerate(zip(seqs, plans))]
            ids = torch.stack([i for i, _ in packed])
            values = torch.stack([v for _, v in packed])
            guess = ids[:, 0].contiguous()
            if cuda:
                host_ids = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
                host_values = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
                host_ids.copy_(ids, non_blocking=True)
                host_values.copy_(values, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record()
            following = engine.compiled_step(cache, guess, self._backend)  # runs while the host chooses
            forwards += 1
            if cuda:
                ready.synchronize()
            else:
                host_ids, host_values = ids, values
            rows, vals = host_ids.tolist(), host_values.tolist()
            for b, s in enumerate(seqs):
                s.consume(logits[b], (rows[b][1:] if plans[b][0] == "field" else rows[b], vals[b]))
            if all(not s.done and s.rollback_to is None and s.pending == [rows[b][0]] for b, s in enumerate(seqs)):
                for s in seqs:
                    s.fed += 1
                    s.pending = []
                logits = following
                continue
            cache.lengths = [n - 1 for n in cache.lengths]
            return None, forwards, 1

    def _consume(self, seqs: list[_Sequence], active: list[int], cache: KVCache, logits: torch.Tensor) -> tuple[int, int]:
        """Each active sequence chooses from its row of ``logits`` (running ahead where it can);
        returns (run-ahead forwards, of them discarded); the caller's feeds are its other forwards."""
        forwards = discarded = 0
        if self._can_run_ahead(seqs, active):
            logits, forwards, discarded = self._run_ahead(seqs, cache, logits)
            if logits is None:
                return forwards, discarded
        for b in active:
            seqs[b].consume(logits[b])
        return forwards, discarded

    def _feed(self, seqs: list[_Sequence], active: list[int], cache: KVCache) -> tuple[torch.Tensor, int]:
        """Feed every active sequence's pending ids; returns the logits and the forwards run."""
        engine = self.engine
        feeds = [seqs[b].pending if b in active else [] for b in range(len(seqs))]
        width = max(len(f) for f in feeds)
        same_width = all(len(f) == width for f in feeds)
        all_active = len(active) == len(seqs)
        if self.compile and all_active and 2 <= width <= self.chunk_size and \
                max(cache.lengths) + self.chunk_size <= cache.max_len:
            # Forced text in one replay of the compiled chunk step (padded to its fixed width).
            rows = [f + [self.tables.pad_id] * (self.chunk_size - len(f)) for f in feeds]
            logits = engine.compiled_chunk(cache, torch.tensor(rows), [len(f) for f in feeds], self._backend)
            return logits, 1
        if self.compile and same_width and width <= self.compiled_feed_max:
            # Every sequence feeds the same number of ids: one compiled step per id (a short forced
            # tag costs a few graph replays instead of one eager forward, launch-bound on a GPU).
            for j in range(width):
                logits = engine.compiled_step(cache, torch.tensor([f[j] for f in feeds]), self._backend)
            return logits, width
        rows = [f + [self.tables.pad_id] * (width - len(f)) for f in feeds]
        ids = torch.tensor(rows, dtype=torch.long, device=engine.device)
        return engine.forward(cache, engine.embed(ids), [len(f) for f in feeds]), 1

    def _proposals(self, seqs: list[_Sequence], active: list[int], cache: KVCache) -> dict[int, list[int]]:
        """The draft ids each active sequence can check after its one chosen id (that fit the cache)."""
        if not self.draft_max:
            return {}
        out = {}
        room = min(self.draft_max, cache.max_len - max(cache.lengths) - 1)
        for b in active:
            s = seqs[b]
            if len(s.pending) == 1 and s.req.draft:
                ids = s.propose(room)
                if ids:
                    out[b] = ids
        return out

    def _feed_with_drafts(self, seqs: list[_Sequence], active: list[int], cache: KVCache,
                          proposals: dict[int, list[int]]) -> None:
        """Feed each active sequence's pending ids and its proposed draft ids in one forward, then let
        each choose from the logits position by position: a draft id is kept while it is the id the
        sequence chooses (it is in the cache already); at the first other choice, the draft ids after
        it are dropped from the cache and the choice is pending, as after a one-id forward."""
        engine = self.engine
        feeds = [seqs[b].pending + proposals.get(b, []) if b in active else [] for b in range(len(seqs))]
        width = max(len(f) for f in feeds)
        rows = [f + [self.tables.pad_id] * (width - len(f)) for f in feeds]
        starts = list(cache.lengths)
        ids = torch.tensor(rows, dtype=torch.long, device=engine.device)
        logits = engine.forward(cache, engine.embed(ids), [len(f) for f in feeds], every_position=True)
        for b in active:
            s, draft = seqs[b], proposals.get(b, [])
            n = len(s.pending)
            base = s.fed
            for j in range(len(draft) + 1):
                s.fed, s.pending = base + n + j, []
                s.consume(logits[b, n - 1 + j])
                if j < len(draft) and not s.done and s.rollback_to is None and s.pending == [draft[j]]:
                    s.from_draft += 1
                    continue
                cache.lengths[b] = starts[b] + n + j
                break

    @torch.no_grad()
    def decode(self, requests: list[DecodeRequest], timings: dict[str, float] | None = None) -> list[DecodeResult]:
        t0 = time.perf_counter()
        seqs = [
            _Sequence(r, self.tables, self.budgets, self.grammar, self.max_objects, self.max_points, self.action_dim,
                      self.max_free_tokens, self.ignore_eos)
            for r in requests
        ]
        for s in seqs:
            s.start()
        model, engine = self.model, self.engine
        pixels = torch.stack([r.pixel_values for r in requests]).to(engine.device)
        patches = model.vision_tokens(pixels).to(engine.dtype)
        n_patches = patches.shape[1]
        cache = self._cache(len(seqs), self._capacity(seqs, n_patches))
        # Prefill: [BOS, patches, prompt + forced text] per sequence, right-padded.
        lengths = [len(s.pending) + n_patches for s in seqs]
        width = max(lengths)
        embeds = torch.zeros(len(seqs), width, patches.shape[2], device=engine.device, dtype=engine.dtype)
        for b, s in enumerate(seqs):
            tok = engine.embed_ids(torch.tensor(s.pending, dtype=torch.long))
            embeds[b, :1] = tok[:1]
            embeds[b, 1 : 1 + n_patches] = patches[b]
            embeds[b, 1 + n_patches : lengths[b]] = tok[1:]
            s.prefill = len(s.pending)
            s.fed = len(s.pending)
            s.pending = []
        logits = engine.forward(cache, embeds, lengths)
        forwards = 1
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        ahead = discarded = 0
        if self._pipelined(seqs):
            forwards += self._decode_free_pipelined(seqs, cache, logits)
        else:
            ran, lost = self._consume(seqs, [b for b, s in enumerate(seqs) if not s.done], cache, logits)
            ahead, discarded = ahead + ran, discarded + lost
        while True:
            active = [b for b, s in enumerate(seqs) if not s.done and s.pending]
            if not active:
                break
            for b in active:
                s = seqs[b]
                if s.rollback_to is not None:
                    cache.lengths[b] = n_patches + s.rollback_to if s.rollback_to > 0 else 0
                    s.rollback_to = None
            proposals = self._proposals(seqs, active, cache)
            if proposals:
                self._feed_with_drafts(seqs, active, cache, proposals)
                forwards += 1
                continue
            logits, ran = self._feed(seqs, active, cache)
            forwards += ran
            for b in active:
                s = seqs[b]
                s.fed += len(s.pending)
                s.pending = []
            ran, lost = self._consume(seqs, active, cache, logits)
            ahead, discarded = ahead + ran, discarded + lost
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if timings is not None:
            timings["prefill_ms"] = (t1 - t0) * 1000
            timings["decode_ms"] = (t2 - t1) * 1000
        return [
            DecodeResult(answer=s.answer, action_ids=s.action_ids, ids=s.ids, tokens_generated=s.generated,
                         tokens_forced=s.forced, prefill_tokens=s.prefill, forwards=forwards + ahead,
                         forwards_ahead=ahead, forwards_discarded=discarded, free_ids=s.free_ids,
                         action_expected=s.action_expected, tokens_from_draft=s.from_draft)
            for s in seqs
        ]
