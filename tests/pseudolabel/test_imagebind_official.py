"""ImageBind's vision trunk as its release builds it (Conv3d stem on the image repeated to 2 frames, pre-trunk
LayerNorm, nn.MultiheadAttention blocks in sequence-first layout, head LayerNorm -> token 0 -> Linear), at the tiny
profile with ImageBind's own parameter names, computes what our timm-layout labeler computes on the same weights."""

import torch
from torch import nn

from pseudolabel.labelers.imagebind import TINY, build_vit, convert_imagebind_state_dict


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp: int):
        super().__init__()
        self.norm_1, self.norm_2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.attn = nn.MultiheadAttention(d, heads, bias=True)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(d, mlp))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(mlp, d))

    def forward(self, x):  # L × B × D
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class _OfficialVision(nn.Module):
    """Module names = the released checkpoint's ``modality_*.vision.*`` keys."""

    def __init__(self, cfg: dict):
        super().__init__()
        d, p, n = cfg["embed_dim"], cfg["patch_size"], (cfg["img_size"] // cfg["patch_size"]) ** 2
        pre = nn.Module()
        pre.rgbt_stem = nn.Module()
        pre.rgbt_stem.proj = nn.Sequential(nn.Identity(), nn.Conv3d(3, d, (2, p, p), (2, p, p), bias=False))
        pre.cls_token = nn.Parameter(torch.randn(1, 1, d))
        pre.pos_embedding_helper = nn.Module()
        pre.pos_embedding_helper.pos_embed = nn.Parameter(torch.randn(1, n + 1, d))
        trunk = nn.Module()
        trunk.pre_transformer_layer = nn.Sequential(nn.LayerNorm(d, eps=1e-6))
        trunk.blocks = nn.Sequential(*[_Block(d, cfg["num_heads"], int(d * cfg["mlp_ratio"]))
                                       for _ in range(cfg["depth"])])
        self.modality_preprocessors = nn.ModuleDict({"vision": pre})
        self.modality_trunks = nn.ModuleDict({"vision": trunk})
        self.modality_heads = nn.ModuleDict({"vision": nn.Sequential(nn.LayerNorm(d, eps=1e-6), nn.Identity(),
                                                                     nn.Linear(d, cfg["out_dim"], bias=False))})

    def forward(self, img):
        pre, trunk, head = (m["vision"] for m in (self.modality_preprocessors, self.modality_trunks,
                                                   self.modality_heads))
        video = img.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # PadIm2Video(repeat, 2)
        x = pre.rgbt_stem.proj[1](video).flatten(2).transpose(1, 2)
        x = torch.cat([pre.cls_token.expand(len(x), -1, -1), x], dim=1) + pre.pos_embedding_helper.pos_embed
        x = trunk.blocks(trunk.pre_transformer_layer(x).transpose(0, 1)).transpose(0, 1)
        tokens = head[0](x)
        return tokens, head[2](tokens[:, 0])


def test_timm_layout_matches_imagebinds_own_modules():
    torch.manual_seed(0)
    official = _OfficialVision(TINY).eval()
    for p in official.parameters():
        nn.init.normal_(p, std=0.3)
    ours = build_vit(TINY).eval()
    ours.load_state_dict(convert_imagebind_state_dict(official.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want_tokens, want_emb = official(x)
        got_tokens = ours.forward_features(x)
        got_emb = ours.forward_head(got_tokens)
    assert torch.allclose(got_tokens, want_tokens, atol=1e-4), (got_tokens - want_tokens).abs().max()
    assert torch.allclose(got_emb, want_emb, atol=1e-4)
