"""Parameter counts of the built-in profiles' real architectures, computed without their weights.

Each architecture is written below as its published config (the model repos' ``config.json``,
or diffusers' class defaults where those *are* the published model, as noted) and built on
torch's ``meta`` device: shapes only, no memory, no download. ``python -m backends.param_counts``
prints every component's count; the figures in :mod:`backends.cards` were computed this way
(Qwen2.5-VL's count is the model card's, not computed: see ``PUBLISHED``).
"""

from __future__ import annotations

import importlib
from typing import Any

_CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "projection_dim": 768,
}
_OPENCLIP_H_TEXT = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "projection_dim": 512,
    "hidden_act": "gelu",
}
_OPENCLIP_BIGG_TEXT = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}
_VIT_H = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
}
_VIT_BIGG = {
    "hidden_size": 1664,
    "intermediate_size": 8192,
    "num_hidden_layers": 48,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}
_T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
}
_UMT5_XXL = {**_T5_XXL, "vocab_size": 256384}
_SD_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
}
_FLUX_VAE = {
    **_SD_VAE,
    "latent_channels": 16,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
_FLUX = {
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
}
_SD21_UNET = {
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}
_SDXL_UNET = {
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [5, 10, 20],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "transformer_layers_per_block": [1, 2, 10],
    "projection_class_embeddings_input_dim": 2816,
    "cross_attention_dim": 2048,
}
_X4_UNET = {
    "in_channels": 7,
    "out_channels": 4,
    "block_out_channels": [256, 512, 512, 1024],
    "down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 3,
    "up_block_types": ["CrossAttnUpBlock2D"] * 3 + ["UpBlock2D"],
    "attention_head_dim": 8,
    "cross_attention_dim": 1024,
    "num_class_embeds": 1000,
    "use_linear_projection": True,
    "only_cross_attention": [True, True, True, False],
    "layers_per_block": 2,
}
_X4_VAE = {
    "block_out_channels": [128, 256, 512],
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "layers_per_block": 2,
}
_WAN_I2V_14B = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
}

# Component -> (library, class, config class or None, config). ``{}``: the class defaults are the
# published model (diffusers wrote those classes for it).
ARCHITECTURES: dict[str, tuple[str, str, str | None, dict[str, Any]]] = {
    "clip-l-text": ("transformers", "CLIPTextModel", "CLIPTextConfig", _CLIP_L),
    "openclip-h-text": ("transformers", "CLIPTextModel", "CLIPTextConfig", _OPENCLIP_H_TEXT),
    "openclip-bigg-text": (
        "transformers",
        "CLIPTextModelWithProjection",
        "CLIPTextConfig",
        _OPENCLIP_BIGG_TEXT,
    ),
    "vit-h-vision": ("transformers", "CLIPVisionModelWithProjection", "CLIPVisionConfig", _VIT_H),
    "vit-bigg-vision": (
        "transformers",
        "CLIPVisionModelWithProjection",
        "CLIPVisionConfig",
        _VIT_BIGG,
    ),
    "t5-xxl-encoder": ("transformers", "T5EncoderModel", "T5Config", _T5_XXL),
    "umt5-xxl-encoder": ("transformers", "UMT5EncoderModel", "UMT5Config", _UMT5_XXL),
    "sd-vae": ("diffusers", "AutoencoderKL", None, _SD_VAE),
    "flux-vae": ("diffusers", "AutoencoderKL", None, _FLUX_VAE),
    "x4-vae": ("diffusers", "AutoencoderKL", None, _X4_VAE),
    "flux-transformer-schnell": ("diffusers", "FluxTransformer2DModel", None, _FLUX),
    "flux-transformer-dev": (
        "diffusers",
        "FluxTransformer2DModel",
        None,
        {**_FLUX, "guidance_embeds": True},
    ),
    "flux-transformer-fill": (
        "diffusers",
        "FluxTransformer2DModel",
        None,
        {**_FLUX, "guidance_embeds": True, "in_channels": 384, "out_channels": 64},
    ),
    "sd21-unet": ("diffusers", "UNet2DConditionModel", None, _SD21_UNET),
    "sdxl-unet": ("diffusers", "UNet2DConditionModel", None, _SDXL_UNET),
    "sdxl-inpaint-unet": (
        "diffusers",
        "UNet2DConditionModel",
        None,
        {**_SDXL_UNET, "in_channels": 9},
    ),
    "x4-unet": ("diffusers", "UNet2DConditionModel", None, _X4_UNET),
    "svd-unet": ("diffusers", "UNetSpatioTemporalConditionModel", None, {}),
    "svd-vae": (
        "diffusers",
        "AutoencoderKLTemporalDecoder",
        None,
        {
            "block_out_channels": [128, 256, 512, 512],
            "latent_channels": 4,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "layers_per_block": 2,
        },
    ),
    "ltx-transformer": ("diffusers", "LTXVideoTransformer3DModel", None, {}),
    "ltx-vae": ("diffusers", "AutoencoderKLLTXVideo", None, {}),
    "wan-i2v-14b-transformer": ("diffusers", "WanTransformer3DModel", None, _WAN_I2V_14B),
    "wan-vae": ("diffusers", "AutoencoderKLWan", None, {}),
    "qwen-image-transformer": ("diffusers", "QwenImageTransformer2DModel", None, {}),
    "qwen-image-vae": ("diffusers", "AutoencoderKLQwenImage", None, {}),
}
# Counts taken from a model card instead of computed (the architecture needs torchvision-era
# processors or is a multimodal model whose config we do not reproduce here).
PUBLISHED: dict[str, tuple[int, str]] = {
    "qwen2.5-vl-7b": (8_292_166_656, "Qwen/Qwen2.5-VL-7B-Instruct model card: 8.29B params"),
}


def count(component: str) -> int:
    """Parameters of ``component`` (a key of ARCHITECTURES or PUBLISHED)."""
    if component in PUBLISHED:
        return PUBLISHED[component][0]
    import torch

    library, cls_name, config_cls, config = ARCHITECTURES[component]
    module = importlib.import_module(library)
    cls = getattr(module, cls_name)
    with torch.device("meta"):
        if config_cls is not None:
            model = cls(getattr(module, config_cls)(**config))
        else:
            model = cls.from_config(config)
    return sum(p.numel() for p in model.parameters())


def ip_adapter_sdxl_params() -> int:
    """h94/IP-Adapter's ip-adapter_sdxl.bin: a 4-token image projection plus to_k/to_v per
    cross-attention layer of the SDXL UNet (as :mod:`backends.random_models` lays it out)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_SDXL_UNET)
    cross, embed, tokens = 2048, 1280, 4
    total = embed * tokens * cross + tokens * cross + 2 * cross
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            total += 2 * module.to_k.weight.shape[0] * cross
    return total


if __name__ == "__main__":
    for name in [*ARCHITECTURES, *PUBLISHED]:
        print(f"{name:28s} {count(name) / 1e9:8.3f} B")
    print(f"{'ip-adapter-sdxl':28s} {ip_adapter_sdxl_params() / 1e9:8.3f} B")
