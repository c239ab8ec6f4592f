"""Detector / segmenter / Grounding DINO code paths with tiny randomly initialised transformers
models (no downloads). Random weights make the detections meaningless, so these tests check the
plumbing — shapes, coordinates, names, clipping — not accuracy; the projection fit that turns
noisy detections into gripper points is tested with a known camera."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ecot.annotate.gripper import points_from_detections  # noqa: E402

from annotate_synthetic import IMAGE, pick_place_episode, to_pixel  # noqa: E402


def tiny_owlvit():
    from transformers import CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTProcessor
    from transformers.models.owlvit.image_processing_pil_owlvit import OwlViTImageProcessorPil

    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}  # OWL-ViT treats id 0 first as padding
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(0)
    cfg = OwlViTConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    processor = OwlViTProcessor(image_processor=OwlViTImageProcessorPil(size={"height": 32, "width": 32},
                                                                        crop_size={"height": 32, "width": 32}), tokenizer=tok)
    return OwlViTForObjectDetection(cfg).eval(), processor


def tiny_sam():
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    cfg = SamConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                           patch_size=16, output_channels=16, global_attn_indexes=[0], mlp_dim=64, num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16),
    )
    processor = SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    return SamModel(cfg).eval(), processor


def test_detector_gripper_code_path():
    from ecot.annotate.gripper import DetectorGripper, DetectorGripperConfig

    det, det_proc = tiny_owlvit()
    sam, sam_proc = tiny_sam()
    backend = DetectorGripper(DetectorGripperConfig(score_threshold=-1.0), detector=det, detector_processor=det_proc,
                              segmenter=sam, segmenter_processor=sam_proc)
    full = pick_place_episode(seed=0, steps_per_leg=2)
    keep = slice(0, 9)  # enough frames (≥ 6) for the projection fit, few enough to stay fast
    episode = type(full)(images=np.random.default_rng(0).integers(0, 255, full.images[keep].shape, dtype=np.uint8),
                         states=full.states[keep], actions=full.actions[keep], instruction=full.instruction)
    one = backend.detect(episode.images[0])
    assert one.shape == (2,) and np.isfinite(one).all()
    assert 0 <= one[0] <= IMAGE and 0 <= one[1] <= IMAGE
    batch = backend.detect_batch(episode.images[:3])
    assert np.allclose(batch[0], one)  # batching does not change a frame's answer
    backend.config.batch_size = 4  # 9 frames: batches of 4, 4, 1
    points = backend.points(episode)
    assert points.shape == (len(episode), 2) and np.isfinite(points).all()
    assert backend.last_report["detected"] == len(episode)


def test_grounding_dino_code_path(tmp_path):
    from transformers import BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoProcessor, SwinConfig
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    from ecot.annotate.boxes import GroundingDinoBoxes
    from ecot.annotate.boxes import GroundingDinoConfig as BoxesConfig

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "the", "red", "block", "blue", "bowl"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2,
                                   out_features=["stage1", "stage2"]),
        text_config=BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_queries=10, num_feature_levels=2, encoder_n_points=1, decoder_n_points=1, max_text_len=32,
    )
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 32}),
                                       tokenizer=BertTokenizer(str(tmp_path / "vocab.txt")))
    backend = GroundingDinoBoxes(BoxesConfig(box_threshold=0.0, text_threshold=0.0),
                                 model=GroundingDinoForObjectDetection(cfg).eval(), processor=processor)
    image = np.random.default_rng(1).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    step = backend.detect(image, ["the red block", "the blue bowl"])
    assert len(step) == 10  # every query above the (zero) thresholds is kept, not one box per frame
    assert [s for s, _, _ in step] == sorted((s for s, _, _ in step), reverse=True)
    for score, name, (x0, y0, x1, y1) in step:
        assert 0.0 <= score <= 1.0 and name and "[SEP]" not in name and "@" not in name
        assert 0 <= x0 < x1 <= 39 and 0 <= y0 < y1 <= 47
    batch = backend.detect_batch(np.stack([image, image[::-1]]), ["the red block", "the blue bowl"])
    assert len(batch) == 2 and [s for s, _, _ in batch[0]] == pytest.approx([s for s, _, _ in step], abs=1e-3)
    with pytest.raises(ValueError, match="phrases"):
        backend.boxes(pick_place_episode(0), [])


def test_phrase_for_label():
    from ecot.annotate.boxes import phrase_for_label

    phrases = ["the red block", "the blue bowl"]
    assert phrase_for_label("red block", phrases) == "the red block"
    assert phrase_for_label("bowl [SEP]", phrases) == "the blue bowl"
    assert phrase_for_label("the", phrases) == "the"  # ambiguous: kept as detected
    assert phrase_for_label("[SEP]", phrases) == ""


def test_projection_fills_noisy_detections_for_any_backend():
    episode = pick_place_episode(seed=3)
    rng = np.random.default_rng(0)
    # The synthetic camera is affine, which a 3x4 projection represents exactly.
    truth = to_pixel(episode.states[:, :3].astype(np.float64))
    det = truth + rng.normal(0, 0.3, truth.shape)
    det[::5] = rng.uniform(0, IMAGE, (len(det[::5]), 2))  # wrong detections
    det[1::7] = np.nan  # missed frames
    points, report = points_from_detections(episode.states, det, threshold_px=1.5)
    assert report["fit"] and report["inliers"] < report["detected"]
    assert np.abs(points - truth).max() < 1.0
    few = np.full_like(det, np.nan)
    few[:3] = truth[:3]
    points, report = points_from_detections(episode.states, few)
    assert not report["fit"] and report["detected"] == 3


def test_transformers_captioner_code_path():
    """Any AutoModelForImageTextToText + processor with a chat template (here a tiny LLaVA)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                              PreTrainedTokenizerFast)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from ecot.annotate.captions import TransformersCaptioner, TransformersCaptionerConfig

    words = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "user", "assistant", ":", "the", "red", "block", ",", "blue", "bowl"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    template = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", chat_template=template,
                               num_additional_image_tokens=1)
    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=16, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                bos_token_id=1, eos_token_id=2, pad_token_id=0),
        image_token_index=4, vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(cfg).eval()
    # Make the language model a fixed bigram chain, so that its greedy answer is known by hand:
    # attention and MLP outputs are zeroed, so the last hidden state is the current token's one-hot
    # embedding (scaled by the final RMSNorm), and the LM head maps token i to the logit of next[i].
    nxt = {w: w for w in words}
    nxt.update({":": "red", "red": "block", "block": ",", ",": "blue", "blue": "bowl", "bowl": "</s>"})
    lm = model.model.language_model
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        lm.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for i, w in enumerate(words):
            lm.embed_tokens.weight[i, i] = 1.0
            model.lm_head.weight[words.index(nxt[w]), i] = 1.0
    captioner = TransformersCaptioner(TransformersCaptionerConfig(max_new_tokens=6), model=model, processor=processor)
    caption, phrases = captioner.caption(pick_place_episode(0))
    # The prompt ends with "assistant :", so the model says "red block , blue bowl" and stops.
    assert phrases == ["red block", "blue bowl"]
    assert caption == "a robot arm over a table with red block and blue bowl"
