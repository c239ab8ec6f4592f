"""Our timm-named ViTs compute what an independent implementation computes.

timm cannot be imported here, so the reference is transformers' own SigLIP and DINOv2-with-
registers vision models, with our weights copied in under their names: the feature map (output
of the second-to-last block, prefix tokens dropped, no final norm) and SigLIP's pooled output
must agree.
"""

from __future__ import annotations

import torch

from ecot.model.config import vit_spec
from ecot.model.vit import VisionTransformer


def _randomize(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _split_qkv(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return weight.chunk(3, dim=0)


def test_siglip_tower_matches_transformers_siglip():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    spec = vit_spec("ecot_tiny_siglip_patch14")
    ours = VisionTransformer(spec, 112).eval()
    _randomize(ours)
    cfg = SiglipVisionConfig(
        hidden_size=spec.embed_dim, intermediate_size=spec.mlp_hidden, num_hidden_layers=spec.depth,
        num_attention_heads=spec.num_heads, image_size=112, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-6,
    )
    ref = SiglipVisionModel(cfg).eval()
    o = dict(ours.state_dict())
    sd = {
        "vision_model.embeddings.patch_embedding.weight": o["patch_embed.proj.weight"],
        "vision_model.embeddings.patch_embedding.bias": o["patch_embed.proj.bias"],
        "vision_model.embeddings.position_embedding.weight": o["pos_embed"][0],
        "vision_model.post_layernorm.weight": o["norm.weight"],
        "vision_model.post_layernorm.bias": o["norm.bias"],
        "vision_model.head.probe": o["attn_pool.latent"],
        "vision_model.head.attention.in_proj_weight": torch.cat([o["attn_pool.q.weight"], o["attn_pool.kv.weight"]]),
        "vision_model.head.attention.in_proj_bias": torch.cat([o["attn_pool.q.bias"], o["attn_pool.kv.bias"]]),
        "vision_model.head.attention.out_proj.weight": o["attn_pool.proj.weight"],
        "vision_model.head.attention.out_proj.bias": o["attn_pool.proj.bias"],
        "vision_model.head.layernorm.weight": o["attn_pool.norm.weight"],
        "vision_model.head.layernorm.bias": o["attn_pool.norm.bias"],
    }
    for part in ("fc1", "fc2"):
        for kind in ("weight", "bias"):
            sd[f"vision_model.head.mlp.{part}.{kind}"] = o[f"attn_pool.mlp.{part}.{kind}"]
    for i in range(spec.depth):
        src, dst = f"blocks.{i}.", f"vision_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = _split_qkv(o[src + f"attn.qkv.{kind}"])
            sd[dst + f"self_attn.q_proj.{kind}"], sd[dst + f"self_attn.k_proj.{kind}"], sd[dst + f"self_attn.v_proj.{kind}"] = q, k, v
            sd[dst + f"self_attn.out_proj.{kind}"] = o[src + f"attn.proj.{kind}"]
            sd[dst + f"layer_norm1.{kind}"] = o[src + f"norm1.{kind}"]
            sd[dst + f"layer_norm2.{kind}"] = o[src + f"norm2.{kind}"]
            sd[dst + f"mlp.fc1.{kind}"] = o[src + f"mlp.fc1.{kind}"]
            sd[dst + f"mlp.fc2.{kind}"] = o[src + f"mlp.fc2.{kind}"]
    # transformers 4.x keys start with "vision_model.", 5.x keys do not
    if not any(k.startswith("vision_model.") for k in ref.state_dict()):
        sd = {k.removeprefix("vision_model."): v for k, v in sd.items()}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not [m for m in missing if "position_ids" not in m] and not unexpected

    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = ref(pixel_values=x, output_hidden_states=True)
        features = ours(x)
        pooled = ours.forward_pooled(x)
    # hidden_states[0] is the embedding output, so block index depth-2 is hidden_states[depth-1]
    torch.testing.assert_close(features, out.hidden_states[spec.depth - 1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pooled, out.pooler_output, rtol=1e-4, atol=1e-4)
    assert features.shape == (2, 64, spec.embed_dim)


def test_dinov2_register_tower_matches_transformers_dinov2():
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    spec = vit_spec("ecot_tiny_dinov2_reg4_patch14")
    ours = VisionTransformer(spec, 112).eval()
    _randomize(ours)  # LayerScale factors too, so that they matter
    cfg = Dinov2WithRegistersConfig(
        hidden_size=spec.embed_dim, num_hidden_layers=spec.depth, num_attention_heads=spec.num_heads,
        mlp_ratio=spec.mlp_hidden // spec.embed_dim, image_size=112, patch_size=14, num_register_tokens=4,
        hidden_act="gelu", layer_norm_eps=1e-6,
    )
    ref = Dinov2WithRegistersModel(cfg).eval()
    o = dict(ours.state_dict())
    # timm's DINOv2-reg has no class position embedding: HF adds position_embeddings[:, 0] to cls, so zero it.
    pos = torch.cat([torch.zeros(1, 1, spec.embed_dim), o["pos_embed"]], dim=1)
    sd = {
        "embeddings.cls_token": o["cls_token"],
        "embeddings.register_tokens": o["reg_token"],
        "embeddings.position_embeddings": pos,
        "embeddings.mask_token": torch.zeros(1, spec.embed_dim),
        "embeddings.patch_embeddings.projection.weight": o["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": o["patch_embed.proj.bias"],
        "layernorm.weight": o["norm.weight"],
        "layernorm.bias": o["norm.bias"],
    }
    for i in range(spec.depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = _split_qkv(o[src + f"attn.qkv.{kind}"])
            sd[dst + f"attention.q_proj.{kind}"], sd[dst + f"attention.k_proj.{kind}"], sd[dst + f"attention.v_proj.{kind}"] = q, k, v
            sd[dst + f"attention.o_proj.{kind}"] = o[src + f"attn.proj.{kind}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                sd[dst + f"{name}.{kind}"] = o[src + f"{name}.{kind}"]
        sd[dst + "layer_scale1.lambda1"] = o[src + "ls1.scale_factor"]
        sd[dst + "layer_scale2.lambda1"] = o[src + "ls2.scale_factor"]
    if any(".attention.attention.query." in k for k in ref.state_dict()):  # transformers 4.x names
        renames = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
                   ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}  # fmt: skip
        for old, new in renames.items():
            sd = {k.replace(old, new): v for k, v in sd.items()}
    ref.load_state_dict(sd, strict=True)

    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = ref(pixel_values=x, output_hidden_states=True)
        features = ours(x)
    expected = out.hidden_states[spec.depth - 1][:, 1 + 4 :]
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    assert features.shape == (2, 64, spec.embed_dim)
