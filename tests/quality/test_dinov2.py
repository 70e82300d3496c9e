"""The DINOv2 feature space against a forward written here from the hub's code
(facebookresearch/dinov2: vision_transformer.py, layers/), on small weights in Meta's layout
made by the test."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from conftest import invoke, parse_json
from torch.nn import functional as F

pytest.importorskip("timm")
pytest.importorskip("torch_fidelity")

from ganctl.quality.dinov2 import build, dinov2, resample_positions  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def meta_state(dim=128, depth=2, grid=5, patch=14, swiglu=False, seed=0) -> dict[str, torch.Tensor]:
    """Random weights with the names and shapes of Meta's dinov2_vit*14_pretrain.pth."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05, centre=0.0):
        return centre + scale * torch.randn(*shape, generator=g)

    state = {
        "cls_token": r(1, 1, dim, scale=1.0),
        "pos_embed": r(1, 1 + grid * grid, dim, scale=1.0),
        "mask_token": torch.zeros(1, dim),
        "patch_embed.proj.weight": r(dim, 3, patch, patch),
        "patch_embed.proj.bias": r(dim),
        "norm.weight": r(dim, centre=1.0),
        "norm.bias": r(dim),
    }
    hidden = 4 * dim
    for i in range(depth):
        b = f"blocks.{i}."
        state |= {
            b + "norm1.weight": r(dim, centre=1.0),
            b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim, scale=dim**-0.5),
            b + "attn.qkv.bias": r(3 * dim),
            b + "attn.proj.weight": r(dim, dim, scale=dim**-0.5),
            b + "attn.proj.bias": r(dim),
            b + "ls1.gamma": r(dim, scale=0.3, centre=0.5),
            b + "norm2.weight": r(dim, centre=1.0),
            b + "norm2.bias": r(dim),
            b + "ls2.gamma": r(dim, scale=0.3, centre=0.5),
        }
        if swiglu:  # SwiGLUFFNFused: hidden 2/3 of 4 dim, rounded up to a multiple of 8
            h = (int(hidden * 2 / 3) + 7) // 8 * 8
            state |= {
                b + "mlp.w12.weight": r(2 * h, dim, scale=dim**-0.5),
                b + "mlp.w12.bias": r(2 * h),
                b + "mlp.w3.weight": r(dim, h, scale=h**-0.5),
                b + "mlp.w3.bias": r(dim),
            }
        else:
            state |= {
                b + "mlp.fc1.weight": r(hidden, dim, scale=dim**-0.5),
                b + "mlp.fc1.bias": r(hidden),
                b + "mlp.fc2.weight": r(dim, hidden, scale=hidden**-0.5),
                b + "mlp.fc2.bias": r(dim),
            }
    return state


def dgm_eval_input(pixels: torch.Tensor) -> torch.Tensor:
    """dgm-eval's DINOv2Encoder.transform (models/dinov2.py) on each image, as its data loader
    hands it over (an RGB PIL image): torchvision's Resize((224, 224), BICUBIC), ToTensor,
    Normalize with ImageNet's mean and deviation."""
    tv = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    pipeline = tv.Compose(
        [
            tv.Resize((224, 224), tv.InterpolationMode.BICUBIC),
            tv.ToTensor(),
            tv.Normalize(MEAN.flatten(), STD.flatten()),
        ]
    )
    return torch.stack([pipeline(Image.fromarray(p.permute(1, 2, 0).numpy(), "RGB")) for p in pixels])


def hub_forward(
    state: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int, dgm_eval: bool = False
) -> torch.Tensor:
    """What torch-fidelity's extractor computes with the hub's model, from the hub's code:
    TF1 bilinear to 224, ImageNet normalisation, patch embedding, the position embeddings
    interpolated per input (bicubic, scale factor (w0 + 0.1) / M, no antialias), pre-norm
    blocks with LayerScale, the final norm's class token. With `dgm_eval`, dgm-eval's input."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    if dgm_eval:
        x = dgm_eval_input(pixels)
    else:
        x = interpolate_bilinear_2d_like_tensorflow1x(pixels.float(), size=(224, 224), align_corners=False)
        x = (x - 255 * MEAN) / (255 * STD)
    w = state["patch_embed.proj.weight"]
    x = F.conv2d(x, w, state["patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x], dim=1)
    pos = state["pos_embed"]
    m, dim, w0 = round((pos.shape[1] - 1) ** 0.5), x.shape[-1], 224 // w.shape[-1]
    if m != w0:
        grid = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((w0 + 0.1) / m, (w0 + 0.1) / m), mode="bicubic", antialias=False)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    x = x + pos
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        block = {k.removeprefix(f"blocks.{i}."): v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        p = block.__getitem__
        h = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        b, n, _ = h.shape
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(b, n, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        a = (attn @ v).transpose(1, 2).reshape(b, n, dim)
        x = x + p("ls1.gamma") * F.linear(a, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        if "mlp.w12.weight" in block:
            x1, x2 = F.linear(h, p("mlp.w12.weight"), p("mlp.w12.bias")).chunk(2, dim=-1)
            f = F.linear(F.silu(x1) * x2, p("mlp.w3.weight"), p("mlp.w3.bias"))
        else:
            f = F.linear(
                F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias")
            )
        x = x + p("ls2.gamma") * f
    return F.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6)[:, 0]


def images(n=3, side=20, channels=3, seed=1) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(
    "swiglu, grid, side, channels",
    [(False, 5, 20, 3), (True, 37, 32, 3), (False, 16, 9, 1)],
    ids=["mlp-resampled", "swiglu-published-grid", "native-grid-grey"],
)
def test_features_are_the_hub_models(tmp_path, swiglu, grid, side, channels):
    state = meta_state(swiglu=swiglu, grid=grid)
    path = tmp_path / "dinov2.pth"
    torch.save(state, path)
    space = dinov2(path)
    x = images(side=side, channels=channels)
    pixels = ((x.expand(-1, 3, -1, -1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    want = hub_forward(state, pixels, heads=2)
    got = space.features(x)
    assert got.shape == (3, 128)
    assert torch.allclose(got, want, atol=2e-4, rtol=1e-4), (got - want).abs().max()
    assert space.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert space.label == "dinov2-unverified" and not space.standard


def test_positions_resampled_by_the_hubs_offset_not_by_size():
    """(16 + 0.1) / 37 and 16 / 37 sample the grid at different points: the offset is kept."""
    pos = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0))
    by_offset = resample_positions(pos, 16)
    grid = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    by_size = F.interpolate(grid, size=(16, 16), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 256, 8)
    assert by_offset.shape == (1, 257, 8) and torch.equal(by_offset[:, 0], pos[:, 0])
    assert (by_offset[:, 1:] - by_size).abs().max() > 1e-3
    assert resample_positions(pos, 37) is pos


def test_published_shapes_are_named():
    """ViT-S/14's shapes (zeros: nothing runs) are labelled as the hub's dinov2_vits14."""
    state = {k: torch.zeros(v.shape) for k, v in meta_state(dim=384, depth=12, grid=37).items()}
    _, label, published = build(state, "--dinov2 x")
    assert (label, published) == ("dinov2-vit-s-14", True)
    _, label, published = build({k: v for k, v in state.items() if not k.startswith("blocks.11.")}, "--dinov2 x")
    assert (label, published) == ("dinov2-unverified", False)


def test_eval_in_dinov2_space(tmp_path):
    path = tmp_path / "dinov2.pth"
    torch.save(meta_state(), path)
    real, fake = tmp_path / "real.npy", tmp_path / "fake.npy"
    np.save(real, images(n=8, seed=2).numpy())
    np.save(fake, images(n=8, seed=3).numpy())
    args = ["eval", "--fake", fake, "--data", real, "--features", "dinov2", "--dinov2", path, "--metrics", "fid,kid,pr"]
    result = invoke(*args, "--n", 8, "--json")
    assert result.exit_code == 0, result.output
    report = parse_json(result.stdout)
    assert {"fid[dinov2-unverified]", "kid[dinov2-unverified]", "precision[dinov2-unverified]"} <= set(
        report["metrics"]
    )
    assert report["feature_space"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert any("not the shapes of a DINOv2 network" in why for why in report["not_standard_because"])
    missing = invoke("eval", "--fake", fake, "--data", real, "--features", "dinov2")
    assert missing.exit_code == 2 and "--dinov2 PATH" in missing.output and "Traceback" not in missing.output


def test_foreign_weights_are_one_line(tmp_path):
    state = meta_state()
    registers = tmp_path / "reg.pth"
    torch.save({**state, "register_tokens": torch.zeros(1, 4, 128)}, registers)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    for path, why in [(registers, "register tokens"), (other, "not DINOv2 weights in Meta's layout")]:
        result = invoke("eval", "--fake", path, "--data", path, "--features", "dinov2", "--dinov2", path)
        assert result.exit_code == 2, result.output
        assert why in result.output and f"--dinov2 {path}" in result.output and "Traceback" not in result.output


def test_dgm_eval_s_preprocessing_is_its_own_and_differs_from_torch_fidelity_s(tmp_path):
    state = meta_state()
    path = tmp_path / "dinov2.pth"
    torch.save(state, path)
    x = images(n=4, side=24)
    pixels = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    theirs = dinov2(path, resize="dgm-eval")
    got = theirs.features(x)
    want = hub_forward(state, pixels, heads=2, dgm_eval=True)
    assert torch.allclose(got, want, atol=2e-4, rtol=1e-4), (got - want).abs().max()
    assert theirs.label == "dinov2-unverified/dgm-eval" and "PIL bicubic" in theirs.checked
    ours = dinov2(path).features(x)
    assert float((ours - got).norm() / got.norm()) > 0.01  # two conventions, two numbers (rounding alone: 1e-5)


def test_published_shapes_say_that_their_values_were_not_checked(tmp_path):
    """A file of ViT-S/14's shapes is labelled the hub's network, and the report says that only
    the shapes were checked (Meta publishes no hash), in JSON and in the sentence people read."""
    from ganctl.quality.scores import Spaces, provenance

    state = meta_state(dim=384, depth=12, grid=37)
    path = tmp_path / "vits14.pth"
    torch.save(state, path)
    space = dinov2(path)
    assert space.label == "dinov2-vit-s-14" and space.standard
    assert "weights' values were not verified" in space.checked and space.sha256[:16] in space.checked
    found = provenance(Spaces(space), ("fid",), None, (32, 32), False)
    assert found["checked"] == {"dinov2-vit-s-14": space.checked}


def test_a_dgm_eval_resize_without_dinov2_features_is_one_line(tmp_path):
    np.save(tmp_path / "x.npy", images(n=8).numpy())
    r = invoke("eval", "--fake", tmp_path / "x.npy", "--data", tmp_path / "x.npy", "--dinov2-resize", "dgm-eval")
    assert r.exit_code == 2 and "add --features dinov2" in r.stderr and r.stderr.count("\n") == 1


def test_a_state_dict_mismatch_says_what_is_missing_not_just_a_colon(tmp_path):
    state = meta_state()
    del state["blocks.1.norm1.weight"]
    state["blocks.0.attn.proj.bias"] = torch.zeros(7)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    r = invoke("eval", "--fake", path, "--data", path, "--features", "dinov2", "--dinov2", path)
    line = r.stderr.strip()
    assert r.exit_code == 2 and line.count("\n") == 0, r.output
    assert "1 missing key (first: blocks.1.norm1.weight)" in line
    assert "blocks.0.attn.proj.bias is [7] in the file but [128] in the network" in line
