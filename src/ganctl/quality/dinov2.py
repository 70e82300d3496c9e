"""The DINOv2 feature space (Oquab et al. 2023), where Stein et al. 2023 measure FD-DINOv2:
FID's formula on the class token of a self-supervised ViT, which ranks generators as people do
more often than Inception-v3 does.

Published numbers come from the hub model (``torch.hub.load("facebookresearch/dinov2",
"dinov2_vit?14")``) behind one of two preprocessings, which differ (relative L2 0.18 between
the features of noise images at ViT-S/14's weights, 0.04 on the tests' small random network):

- ``torch-fidelity`` (the default): torch-fidelity 0.4's ``FeatureExtractorDinoV2``. Images as
  uint8, resized to 224 x 224 with TensorFlow 1's bilinear resize, normalised with ImageNet's
  mean and deviation, and the normalised class token out. Here that ``forward`` itself runs.
- ``dgm-eval``: the code of Stein et al. 2023 (layer6ai-labs/dgm-eval, ``models/dinov2.py``),
  behind the FD-DINOv2 leaderboard. Each image as an 8-bit RGB PIL image, resized to 224 x 224
  by PIL's bicubic (torchvision's ``Resize`` on a PIL image), scaled to [0, 1], normalised with
  ImageNet's mean and deviation; the same class token, unnormalised by anything further
  (``get_representations(..., normalized=False)``). Its default network is ViT-L/14
  (``--dinov2 dinov2_vitl14_pretrain.pth``); ViT-S/14 numbers are not its leaderboard's.

torch.hub fetches code and weights from the internet, so here the weights come from a file
(``--dinov2 PATH``: Meta's ``dinov2_vit?14_pretrain.pth``) and the architecture from timm. What
makes the network the hub's at 224 px:

- the position embeddings are trained for 518 px (37 x 37 patches) and the hub resamples them
  for each input: bicubic, by scale factor (16 + 0.1) / 37 (its ``interpolate_offset``), without
  antialiasing (``interpolate_antialias=False``). Done once here, by that rule;
- LayerScale, LayerNorm eps 1e-6, biased qkv, GELU MLP (SwiGLU, packed ``w12``, for ViT-g);
  timm's blocks compute the same, tested against a forward written from the hub's code.

Meta publishes no hash for these files, so what is checked is the architecture read from the
shapes (labelled ``dinov2-vit-s-14``; weights of another shape ``dinov2-unverified``), and every
result records the file's SHA-256 and says that its values were not verified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from ganctl.errors import ConfigError, DataError
from ganctl.quality.features import FeatureSpace, _pixels, mismatch, read_state_dict, weights_path

DINOV2_ENV = "GANCTL_DINOV2"
EXTRAS = "pip install 'ganctl[dinov2]'"
INPUT_SIZE = 224  # torch-fidelity's FeatureExtractorDinoV2.INPUT_IMAGE_SIZE
INTERPOLATE_OFFSET = 0.1  # the hub's default (dinov2/hub/backbones.py)
HEAD_DIM = 64  # every published DINOv2 ViT: s 6 x 64, b 12 x 64, l 16 x 64, g 24 x 64
# The hub's models: (embed dim, depth, ffn) at patch 14 and 518 px (37 x 37 patches).
PUBLISHED = {
    "dinov2-vit-s-14": (384, 12, "mlp"),
    "dinov2-vit-b-14": (768, 12, "mlp"),
    "dinov2-vit-l-14": (1024, 24, "mlp"),
    "dinov2-vit-g-14": (1536, 40, "swiglu"),
}
PUBLISHED_GRID = 37


def dinov2_path(path: str | Path | None) -> Path | None:
    """--dinov2, else $GANCTL_DINOV2, else None."""
    return weights_path(path, DINOV2_ENV)


def resample_positions(pos_embed: Tensor, grid: int, offset: float = INTERPOLATE_OFFSET) -> Tensor:
    """The hub's ``interpolate_pos_encoding`` for a square input of `grid` x `grid` patches: the
    class token's embedding kept, the patch embeddings resampled bicubically by the scale
    factor (grid + offset) / M, in float32, without antialiasing."""
    n = pos_embed.shape[1] - 1
    m = round(n**0.5)
    if m * m != n:
        raise ValueError(f"pos_embed holds {n} patch positions, not a square grid")
    if m == grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    scale = (grid + offset) / m
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([pos_embed[:, :1].float(), patches], dim=1).to(pos_embed.dtype)


def _architecture(state: dict[str, Tensor], where: str) -> tuple[int, int, int, int, str, float]:
    """(embed dim, depth, patch, grid side, ffn, mlp ratio) read from the shapes."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"):
        if key not in state:
            raise DataError(f"{where}: not DINOv2 weights in Meta's layout (no {key!r})")
    if any(k.startswith("register_tokens") for k in state):
        raise DataError(f"{where}: weights with register tokens (dinov2_*_reg); give the plain backbone's file")
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    if f"blocks.{depth - 1}.attn.qkv.weight" not in state or depth == 0:
        raise DataError(f"{where}: not DINOv2 weights in Meta's layout (blocks numbered 0..{depth - 1} expected)")
    swiglu = "blocks.0.mlp.w12.weight" in state
    hidden = state["blocks.0.mlp.w12.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0]
    return dim, depth, patch, grid, ("swiglu" if swiglu else "mlp"), hidden / dim


def _timm_state(state: dict[str, Tensor], grid: int) -> dict[str, Tensor]:
    """Meta's names as timm's (SwiGLU's w12/w3 are timm's fc1/fc2; the mask token, used only in
    DINOv2's training, dropped), with the positions resampled to `grid`."""
    out = {}
    for key, t in state.items():
        if key == "mask_token":
            continue
        key = key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        out[key] = resample_positions(t, grid) if key == "pos_embed" else t
    return out


def build(state: dict[str, Tensor], where: str) -> tuple[nn.Module, str, bool]:
    """A timm ViT computing what the hub's DINOv2 computes at 224 px, its label and whether its
    architecture is one Meta published."""
    try:
        from timm.layers import SwiGLUPacked
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        raise ConfigError(f"{where}: the DINOv2 feature space needs timm and torch-fidelity; {EXTRAS}") from None
    dim, depth, patch, grid, ffn, ratio = _architecture(state, where)
    if INPUT_SIZE % patch:
        raise DataError(f"{where}: patches of {patch} px do not tile the {INPUT_SIZE} px input")
    swiglu = {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU} if ffn == "swiglu" else {}
    with torch.random.fork_rng(devices=[]):
        net = VisionTransformer(
            img_size=INPUT_SIZE,
            patch_size=patch,
            embed_dim=dim,
            depth=depth,
            num_heads=max(1, dim // HEAD_DIM),
            mlp_ratio=ratio,
            init_values=1.0 if "blocks.0.ls1.gamma" in state else None,
            num_classes=0,
            global_pool="token",
            weight_init="skip",
            **swiglu,
        )
    try:
        net.load_state_dict(_timm_state(state, INPUT_SIZE // patch), strict=True)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{where}: not DINOv2 weights in Meta's layout ({mismatch(exc)})") from None
    name = next((n for n, arch in PUBLISHED.items() if arch == (dim, depth, ffn)), None)
    published = name is not None and patch == 14 and grid == PUBLISHED_GRID
    return net.requires_grad_(False).eval(), (name if published else "dinov2-unverified"), published


RESIZES = ("torch-fidelity", "dgm-eval")  # --dinov2-resize: whose preprocessing
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pil_bicubic(pixels: Tensor) -> Tensor:
    """dgm-eval's input: each uint8 RGB image (N, 3, H, W) resized to 224 x 224 by PIL's bicubic
    as an 8-bit image, scaled to [0, 1] and normalised with ImageNet's mean and deviation."""

    resized = [
        np.asarray(
            Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)
        )
        for image in pixels.cpu()
    ]
    x = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def dinov2(
    path: Path, device: torch.device | str = "cpu", where: str | None = None, resize: str = "torch-fidelity"
) -> FeatureSpace:
    """DINOv2's class token with the weights of `path` (the `dinov2` extra), preprocessed by
    torch-fidelity's `FeatureExtractorDinoV2.forward` or, with `resize` "dgm-eval", as dgm-eval
    does (`pil_bicubic`); the label then says so (`dinov2-vit-l-14/dgm-eval`)."""
    where = where or f"--dinov2 {path}"
    if resize not in RESIZES:
        raise ConfigError(f"--dinov2-resize {resize!r} is not one of: {', '.join(RESIZES)}")
    try:
        from torch_fidelity.feature_extractor_base import FeatureExtractorBase
        from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
    except ImportError:
        raise ConfigError(f"{where}: the DINOv2 feature space needs timm and torch-fidelity; {EXTRAS}") from None
    state, sha = read_state_dict(path, where)
    model, label, published = build(state, where)

    class Extractor(FeatureExtractorDinoV2):
        """torch-fidelity's extractor with the model given, not fetched by torch.hub."""

        def __init__(self, model: nn.Module) -> None:
            FeatureExtractorBase.__init__(self, "ganctl-dinov2", ["dinov2"])
            self.feature_extractor_internal_dtype = torch.float32
            self.model = model

    net = Extractor(model).requires_grad_(False).eval().to(device)
    dims = int(state["cls_token"].shape[-1])

    def extract(images: Tensor) -> tuple[Tensor, Tensor | None]:
        if resize == "dgm-eval":
            return net.model(pil_bicubic(_pixels(images)).to(net.model.cls_token.device)), None
        return net(_pixels(images))[0], None

    if published:
        checked = (
            f"the shapes of Meta's published {label} (Meta publishes no checksum: the weights' values were not"
            f" verified; their sha256 is {sha[:16]}...)"
        )
    else:
        checked = "not the shapes of any DINOv2 network Meta published"
    if resize == "dgm-eval":
        label += "/dgm-eval"
        checked += "; resized as dgm-eval does (PIL bicubic)"
    else:
        checked += "; resized as torch-fidelity 0.4 does (TF1 bilinear)"
    return FeatureSpace(
        "dinov2", label, published, sha, dims, extract, torch.device(device), str(path), False, where, checked
    )
