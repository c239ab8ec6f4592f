"""The trainer with a real tiny VLA: overfitting, export, exact resume after a kill, LoRA, checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train_helpers import make_episodes, reasoning_for, tiny_model_and_processor

from ecot.train import checkpoint as ckpt
from ecot.train.data import EpisodeSteps, SampleConfig, StepDataset
from ecot.train.samples import collate
from ecot.train.trainer import Trainer, TrainConfig

RUN_TINY = Path(__file__).resolve().parent / "run_tiny.py"
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]).logits


def test_tiny_model_overfits_and_exports(tmp_path):
    from ecot.model.vla import VLA

    episodes = make_episodes(2, 3)
    reasoning = reasoning_for(episodes)
    model, processor, stats = tiny_model_and_processor(episodes, reasoning)
    data = StepDataset(EpisodeSteps(episodes), reasoning, processor, stats, SampleConfig())
    config = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=60, batch_size=6, lr=1e-2, log_every=10, progress=False)
    trainer = Trainer(config, model, processor, data, eval_data=data, action_stats=stats.action)
    first = trainer.evaluate()
    result = trainer.fit()

    assert result["eval/action_accuracy"] >= 0.95, result
    assert result["eval/reasoning_loss"] < 0.25 * first["eval/reasoning_loss"]
    assert result["eval/action_l1"] < 0.2 * first["eval/action_l1"]
    assert (tmp_path / "run" / "tensorboard").is_dir()

    # The final directory is a release-format checkpoint that reproduces the trained model.
    loaded = VLA.from_pretrained(tmp_path / "run" / "final", progress=False)
    batch = collate([data[(i, i, 0)] for i in range(len(data))], processor.tokenizer.pad_token_id)
    torch.testing.assert_close(_logits(loaded, batch), _logits(trainer.module, batch))
    assert loaded.config.norm_stats == processor.config.norm_stats
    assert (tmp_path / "run" / "final" / "tokenizer.json").is_file()


@pytest.mark.parametrize("finetune", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_kill_and_resume_reproduces_the_losses(tmp_path, finetune):
    """A real training process SIGKILLed after a checkpoint, then resumed, logs the uninterrupted
    run's losses step for step and ends with its weights (full fine-tuning and LoRA)."""
    from ecot.model.vla import VLA

    steps = 10
    args = ["--save-every", "3", "--finetune", finetune]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(RUN_TINY), str(ref), str(steps), "--finetune", finetune], check=True, env=_env(),
                   capture_output=True)
    reference = dict(_losses(ref))
    assert sorted(reference) == list(range(1, steps + 1))

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(RUN_TINY), str(run), str(steps), *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "step_000003" / ckpt.STATE_FILE).exists():
        assert proc.poll() is None, "training exited before its first checkpoint"
        assert time.time() < deadline, "no checkpoint after 240 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
    killed_at = max(step for step, _ in _losses(run))
    assert killed_at < steps and not (run / "final").exists()
    resumed_from = ckpt.list_checkpoints(run)[-1][0]
    if finetune == "lora":  # the checkpoint holds the adapters (what a LoRA run needs to go on)
        state = ckpt.load_state(ckpt.latest_checkpoint(run))
        assert state["step"] == resumed_from and state["adapters"] and all("lora_" in k for k in state["adapters"])

    subprocess.run([sys.executable, str(RUN_TINY), str(run), str(steps), *args], check=True, env=_env(), capture_output=True)
    rows = _losses(run)
    # Every logged step, before the kill and after resuming, equals the uninterrupted run.
    for step, loss in rows:
        assert loss == pytest.approx(reference[step], rel=1e-6, abs=1e-7), (step, loss, reference[step])
    after = [step for step, _ in rows[killed_at:]]
    assert after == list(range(resumed_from + 1, steps + 1))
    assert ckpt.load_state(ckpt.latest_checkpoint(run))["step"] == steps
    # The final model loads on its own and has the uninterrupted run's weights.
    final, expected = ckpt.load_model_weights(run / "final"), ckpt.load_model_weights(ref / "final")
    assert final.keys() == expected.keys()
    for name in final:
        torch.testing.assert_close(final[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert VLA.from_pretrained(run / "final", progress=False).num_patches > 0


def test_lora_export_equals_the_adapted_model(tmp_path):
    from ecot.model.vla import VLA

    episodes = make_episodes(2, 3)
    reasoning = reasoning_for(episodes)
    model, processor, stats = tiny_model_and_processor(episodes, reasoning)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    data = StepDataset(EpisodeSteps(episodes), reasoning, processor, stats, SampleConfig())
    config = TrainConfig(out_dir=str(tmp_path / "lora"), max_steps=8, batch_size=6, lr=1e-2, finetune="lora", progress=False, tensorboard=False)
    config.lora.rank = 4
    trainer = Trainer(config, model, processor, data, action_stats=stats.action)
    result = trainer.fit()
    assert trainer.module.peft_config  # trained through peft
    trainable = [n for n, p in trainer.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    loaded = VLA.from_pretrained(tmp_path / "lora" / "final", progress=False)
    batch = collate([data[(i, i, 0)] for i in range(len(data))], processor.tokenizer.pad_token_id)
    torch.testing.assert_close(_logits(loaded, batch), _logits(trainer.module, batch), rtol=1e-4, atol=1e-4)
    # The exported weights are the LoRA merge computed here from the saved adapter tensors alone,
    # W + (alpha / r) * B @ A, and nothing else changed (no peft code in this oracle).
    adapters = ckpt.load_state(ckpt.latest_checkpoint(tmp_path / "lora"))["adapters"]
    scale = config.lora.alpha / config.lora.rank
    sd = loaded.state_dict()
    assert sd.keys() == base.keys()
    used = set()
    for key, weight in base.items():
        module = key.removesuffix(".weight")
        a_key, b_key = (f"base_model.model.{module}.lora_{x}.default.weight" for x in "AB")
        if key.endswith(".weight") and a_key in adapters:
            a, b = adapters[a_key].double(), adapters[b_key].double()
            assert a.shape == (config.lora.rank, weight.shape[1]) and b.shape == (weight.shape[0], config.lora.rank)
            expected = (weight.double() + scale * (b @ a)).to(weight.dtype)
            used.update((a_key, b_key))
            torch.testing.assert_close(sd[key], expected, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(sd[key], weight), key
    assert used == set(adapters)  # every saved adapter was merged somewhere
    assert any(not torch.equal(adapters[k], torch.zeros_like(adapters[k])) for k in adapters if "lora_B" in k)
    # the adapters changed the attention/MLP weights, the LM head and embeddings stayed the base
    changed = [k for k in base if not torch.equal(base[k], sd[k])]
    assert any("q_proj" in k for k in changed)
    assert "language_model.lm_head.weight" not in changed
    assert result["train/loss"] > 0


def test_checkpoint_write_is_atomic(tmp_path):
    dest = tmp_path / "checkpoints" / ckpt.step_dir_name(5)

    def crash(tmp: Path) -> None:
        (tmp / ckpt.STATE_FILE).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.write_atomically(dest, crash)
    assert not dest.exists()
    assert ckpt.latest_checkpoint(tmp_path) is None
    assert list((tmp_path / "checkpoints").iterdir()) == []

    ckpt.write_atomically(dest, lambda tmp: (tmp / ckpt.STATE_FILE).write_text("ok"))
    (tmp_path / "checkpoints" / "step_000009").mkdir()  # no trainer state: incomplete, ignored
    assert ckpt.latest_checkpoint(tmp_path) == dest
    with pytest.raises(FileNotFoundError, match="no trainer_state.pt"):
        ckpt.load_state(tmp_path / "checkpoints" / "step_000009")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="finetune"):
        TrainConfig(finetune="qlora")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def _two_sample_forward():
    """(processor, a batch of two training samples, the tiny model's output on it with labels)."""
    episodes = make_episodes(2, 3)
    reasoning = reasoning_for(episodes)
    model, processor, stats = tiny_model_and_processor(episodes, reasoning)
    data = StepDataset(EpisodeSteps(episodes), reasoning, processor, stats, SampleConfig())
    batch = collate([data[(i, i, 0)] for i in range(2)], processor.tokenizer.pad_token_id)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"], labels=batch["labels"])
    return processor, batch, out


def test_action_loss_weight_counts_each_action_token_that_many_times():
    import torch.nn.functional as F

    from ecot.train.samples import IGNORE_INDEX, SEG_ACTION
    from ecot.train.trainer import weighted_loss

    with pytest.raises(ValueError, match="action_loss_weight must be a positive number"):
        TrainConfig(action_loss_weight=0)
    processor, batch, out = _two_sample_forward()
    torch.testing.assert_close(weighted_loss(out, batch, 1.0), out.loss)
    # By hand: every trained token's cross-entropy, the action's counted 5 times, over the trained tokens.
    shifted = out.logits[:, -batch["input_ids"].shape[1]: -1].float()
    targets, trained = batch["input_ids"][:, 1:], batch["labels"][:, 1:] != IGNORE_INDEX
    token_loss = F.cross_entropy(shifted.transpose(1, 2), targets, reduction="none")
    weights = torch.where(batch["segments"][:, 1:] == SEG_ACTION, 5.0, 1.0) * trained
    assert (batch["segments"][:, 1:][trained] == SEG_ACTION).sum() >= 7
    torch.testing.assert_close(weighted_loss(out, batch, 5.0), (token_loss * weights).sum() / trained.sum())


def test_freezing_checkpointing_bf16_and_accumulation(tmp_path):
    episodes = make_episodes(2, 3)
    reasoning = reasoning_for(episodes)
    model, processor, stats = tiny_model_and_processor(episodes, reasoning)
    vision = {k: v.clone() for k, v in model.vision_backbone.state_dict().items()}
    lm = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    data = StepDataset(EpisodeSteps(episodes), reasoning, processor, stats, SampleConfig(loss_mask="reasoning+action"))
    config = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=3, batch_size=3, grad_accum=2, lr=1e-2, freeze_vision=True,
                         gradient_checkpointing=True, precision="bf16", schedule="cosine", warmup_steps=1, log_every=1,
                         progress=False, tensorboard=False)
    trainer = Trainer(config, model, processor, data, action_stats=stats.action)
    trainer.fit()
    language_model = trainer.module.language_model
    assert getattr(language_model, "is_activation_checkpointing", None) or language_model.is_gradient_checkpointing
    assert all(torch.equal(vision[k], v) for k, v in trainer.module.vision_backbone.state_dict().items())
    assert any(not torch.equal(lm[k], v) for k, v in trainer.module.language_model.state_dict().items())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["train/lr"] for r in rows]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < lrs[1]  # warmup to the peak, then cosine decay
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in rows)


def test_lora_resume_is_exact(tmp_path):
    def train(out: Path, steps: int) -> list[tuple[int, float]]:
        episodes = make_episodes(2, 3)
        reasoning = reasoning_for(episodes)
        model, processor, stats = tiny_model_and_processor(episodes, reasoning)  # the same seeded base every time
        data = StepDataset(EpisodeSteps(episodes), reasoning, processor, stats, SampleConfig(tag_dropout=0.3))
        config = TrainConfig(out_dir=str(out), max_steps=steps, batch_size=3, lr=1e-2, finetune="lora", log_every=1,
                             progress=False, tensorboard=False)
        config.lora.rank = 4
        config.lora.dropout = 0.1  # model-internal randomness must be reproduced too
        Trainer(config, model, processor, data, action_stats=stats.action).fit()
        return _losses(out)

    reference = train(tmp_path / "ref", 4)
    train(tmp_path / "run", 2)
    resumed = train(tmp_path / "run", 4)
    assert [s for s, _ in resumed] == [1, 2, 3, 4]
    assert resumed == reference
    state = ckpt.load_state(ckpt.latest_checkpoint(tmp_path / "run"))
    assert state["adapters"] and all("lora_" in k for k in state["adapters"])


def test_action_label_sigma_spreads_each_action_target_over_its_neighbouring_bins():
    import torch.nn.functional as F

    from ecot.train.metrics import action_label_targets, weighted_loss
    from ecot.train.samples import IGNORE_INDEX, SEG_ACTION

    with pytest.raises(ValueError, match="action_label_sigma must be a number >= 0"):
        TrainConfig(action_label_sigma=-1)
    # The labels: centred on the true bin, symmetric, wider with sigma, clipped to the action range.
    soft = action_label_targets(torch.tensor([1000 + 128, 1000]), 1000, 256, 2.0)
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    assert int(soft[0].argmax()) == 128 and torch.isclose(soft[0, 126], soft[0, 130])
    assert 0.15 < float(soft[0, 128]) < 0.25 and float(soft[0, 120]) < 1e-4
    assert int(soft[1].argmax()) == 0 and float(soft[1, 0]) > float(soft[0, 128])
    assert float(action_label_targets(torch.tensor([1128]), 1000, 256, 8.0)[0, 128]) < 0.06

    processor, batch, out = _two_sample_forward()
    tok = processor.action_tokenizer
    with pytest.raises(ValueError, match="action tokenizer"):
        weighted_loss(out, batch, 1.0, 2.0)
    # By hand: reasoning tokens keep their cross-entropy, each action token's target is the soft label.
    shifted = out.logits[:, -batch["input_ids"].shape[1]: -1].float()
    targets, trained = batch["input_ids"][:, 1:], batch["labels"][:, 1:] != IGNORE_INDEX
    token_loss = F.cross_entropy(shifted.transpose(1, 2), targets, reduction="none")
    action = (batch["segments"][:, 1:] == SEG_ACTION) & trained
    log_p = shifted[action].log_softmax(-1)[:, tok.first_id : tok.first_id + tok.n_bins]
    soft_loss = -(action_label_targets(targets[action], tok.first_id, tok.n_bins, 3.0) * log_p).sum(-1)
    expected = (token_loss * (trained & ~action)).sum() + 2.0 * soft_loss.sum()
    torch.testing.assert_close(weighted_loss(out, batch, 2.0, 3.0, tok), expected / trained.sum())
    assert not torch.isclose(weighted_loss(out, batch, 1.0, 3.0, tok), out.loss)
    torch.testing.assert_close(weighted_loss(out, batch, 1.0, 0.0, tok), out.loss)


def test_action_image_shuffle_shows_another_steps_image_and_trains_only_the_action():
    """A shuffled sample keeps its own text and action but shows another step's image, and only its
    action tokens carry the loss (the chain does not describe that image); unshuffled samples are unchanged."""
    from ecot.train.samples import IGNORE_INDEX, SEG_ACTION, SEG_ACTION_TAG, SEG_EOS, SEG_REASONING

    with pytest.raises(ValueError, match="action_image_shuffle"):
        SampleConfig(action_image_shuffle=1.5)
    episodes = make_episodes(2, 3)
    reasoning = reasoning_for(episodes)
    _, processor, stats = tiny_model_and_processor(episodes, reasoning)
    steps = EpisodeSteps(episodes)
    plain = StepDataset(steps, reasoning, processor, stats, SampleConfig())
    always = StepDataset(steps, reasoning, processor, stats, SampleConfig(action_image_shuffle=1.0))
    images = [plain[(i, i, 0)]["pixel_values"] for i in range(len(steps))]
    for i in range(len(steps)):
        a, b = plain[(i, i, 0)], always[(i, i, 0)]
        torch.testing.assert_close(a["input_ids"], b["input_ids"])
        torch.testing.assert_close(a["action"], b["action"])
        assert not torch.equal(b["pixel_values"], a["pixel_values"])  # another step's image ...
        assert any(torch.equal(b["pixel_values"], img) for j, img in enumerate(images) if j != i)  # ... of this dataset
        trained = b["labels"] != IGNORE_INDEX
        assert set(b["segments"][trained].tolist()) == {SEG_ACTION, SEG_EOS}  # the action tokens and EOS only
        assert bool(((a["labels"] != IGNORE_INDEX) & (a["segments"] != SEG_ACTION)).any())  # plain: reasoning too
    never = StepDataset(steps, reasoning, processor, stats, SampleConfig(action_image_shuffle=0.0))
    torch.testing.assert_close(never[(0, 0, 0)]["pixel_values"], images[0])

    # action_only_shuffled: a sample that shows its own image trains its reasoning and not its action.
    with pytest.raises(ValueError, match="action_only_shuffled"):
        SampleConfig(action_only_shuffled=True)
    half = StepDataset(steps, reasoning, processor, stats, SampleConfig(action_image_shuffle=0.5, action_only_shuffled=True))
    kinds = set()
    for key in [(i, seed, 0) for i in range(len(steps)) for seed in range(8)]:
        sample = half[key]
        trained = set(sample["segments"][sample["labels"] != IGNORE_INDEX].tolist())
        own_image = torch.equal(sample["pixel_values"], images[key[0]])
        if own_image:
            assert SEG_ACTION not in trained and {SEG_REASONING, SEG_ACTION_TAG} <= trained, (key, trained)
        else:
            assert trained == {SEG_ACTION, SEG_EOS}, (key, trained)
        kinds.add(own_image)
    assert kinds == {True, False}  # both kinds occur
