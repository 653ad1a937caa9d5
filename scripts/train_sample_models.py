"""Train the bundled sample models on Fashion-MNIST and write their weights, manifest and the bundled data subset.

    python scripts/train_sample_models.py                 # every sample model
    python scripts/train_sample_models.py --only fashion_cnn --epochs 6
    python scripts/train_sample_models.py --only fashion_mobilenet --threads 1
    # its slimming stage only, from the 4-epoch stage-1 weights (the first committed version of its weights file):
    python scripts/train_sample_models.py --only fashion_mobilenet --threads 1 --stage1-weights stage1.safetensors

Needs the full dataset (Debian's dataset-fashion-mnist, or the IDX files in data/). Seeded; CPU only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import BUNDLED_SUBSET, Dataset, load_fashion_mnist
from core.models.architectures import SAMPLE_ARCHITECTURES
from core.models.sources import SAMPLE_MODELS_DIR

RECIPES = {
    "fashion_cnn": {"epochs": 8, "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4, "label_smoothing": 0.1},
    "fashion_resnet": {"epochs": 8, "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4, "label_smoothing": 0.1},
    # Stage 1, as the MobileNet papers train: no weight decay on the depthwise kernels. This alone left a sample that
    # per-tensor int8 did not hurt (0.08–0.17 points): decay on BatchNorm's γ pulled every γ to ~0.67, so folded
    # depthwise channel ranges stayed ~2× apart. Stage 2 ("slimming") fine-tunes it for one epoch the way network
    # slimming trains for channel sparsity (Liu et al. 2017): no weight decay on BatchNorm γ/β, an L1 penalty λ on a share of
    # the expansion layers' γ, meant to switch hidden channels off, whose depthwise BatchNorm variance then collapses
    # and, folded in, widens their kernels far beyond their neighbours' (the spread of real MobileNets).
    "fashion_mobilenet": {"epochs": 4, "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4, "label_smoothing": 0.1,
                          "depthwise_weight_decay": 0.0,
                          "slimming": {"epochs": 1, "lr": 0.05, "norm_weight_decay": 0.0, "expand_gamma_l1": 0.1,
                                       "expand_gamma_l1_share": 0.05}},
}
# Measured (--slimming-l1, --slimming-share; stage 2 from the same stage-1 weights; top-1 on the 10k test images,
# bench.granularity_lesson; "off" = expansion channels with |γ| < 0.01, of 1,536). The L1 on *every* expansion γ
# shrinks them together (the depthwise BatchNorm renormalises their scale), then switches most off at once:
#   λ 0.003: none off, 91.62 %, no wider ranges     λ 0.005 (the previous sample): none off, 91.37 %, per tensor
#   ~1 point below per channel     λ 0.007: 703 off, 89.43 %, PyTorch int8 −7.6 points either way
#   λ 0.01: 1,074 off, 87.94 %; W8A8 per channel −0.18 / per tensor −8.05 points; PyTorch int8 −2.60 / −12.29
#   λ 0.015 / 0.03 / 0.1: 1,265 / 1,426 / 1,500 off, 87.41 / 84.12 / 75.13 %
# So the L1 acts on a seeded 5 % of each expansion layer's channels (share 0.05, λ 0.1): those few switch off
# (81 of 1,536), the depthwise BatchNorm after each one has nearly nothing left to normalise, its variance collapses
# and, folded in, its channel dwarfs its neighbours — the dead-channel pattern of trained ImageNet MobileNets
# (Nagel et al. 2019). fp32 91.36 %; W8A8 per channel +0.11 / per tensor −8.17 points; PyTorch int8 +0.04 / −8.35.
# (share 0.1, λ 0.05: 158 off, 91.14 %; per tensor −12.4 / −11.6 points.)
SLIMMING_STAGE = {"epochs": 1, "lr": 0.05, "norm_weight_decay": 0.0}


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-pixel translation (pad + crop) and horizontal flip, on a uint8 batch."""
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: Dataset) -> float:
    model.eval()
    correct = 0
    for x, y in dataset.batches(dataset.test, batch_size=1000):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(dataset.test)


def _parameter_groups(model: nn.Module, recipe: dict) -> list[dict]:
    """One group for all parameters, plus one each for depthwise kernels and BatchNorm γ/β when the recipe gives
    them their own weight decay."""
    special = {
        "depthwise_weight_decay": [
            m.weight for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels
        ],
        "norm_weight_decay": [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()],
    }
    groups, taken = [], set()
    for key, params in special.items():
        if key in recipe:
            groups.append({"params": params, "weight_decay": recipe[key]})
            taken |= {id(p) for p in params}
    return [{"params": [p for p in model.parameters() if id(p) not in taken]}, *groups]


def _expand_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorms of the inverted residuals' 1×1 expansion convs: the gates of the hidden channels."""
    return [m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and ".expand." in name]


def _slimming_masks(batchnorms: list[nn.BatchNorm2d], share: float, seed: int) -> list[torch.Tensor]:
    """Which channels of each expansion BatchNorm the L1 acts on: all (share 1), or a seeded ⌈share·C⌉ of them."""
    gen = torch.Generator().manual_seed(seed)
    masks = []
    for bn in batchnorms:
        mask = torch.zeros(bn.num_features)
        mask[torch.randperm(bn.num_features, generator=gen)[: math.ceil(share * bn.num_features)]] = 1.0
        masks.append(mask)
    return masks


def _add_l1_subgradient(batchnorms: list[nn.BatchNorm2d], strength: float, masks: list[torch.Tensor]) -> None:
    """Network slimming: the subgradient of strength·Σ|γ| (over the masked channels) added to γ's gradient."""
    for bn, mask in zip(batchnorms, masks, strict=True):
        bn.weight.grad.add_(torch.sign(bn.weight.detach()) * mask, alpha=strength)


def _switched_off(batchnorms: list[nn.BatchNorm2d]) -> str:
    gammas = torch.cat([bn.weight.detach().abs() for bn in batchnorms])
    return f"{int((gammas < 0.01).sum())} of {len(gammas)} expansion channels with |γ| < 0.01"


def _train_epochs(model: nn.Module, dataset: Dataset, *, recipe: dict, seed: int, label: str) -> None:
    """SGD with OneCycle over the recipe's epochs; with an expand_gamma_l1 strength, the slimming L1 on γ too."""
    epochs = recipe["epochs"]
    optimizer = torch.optim.SGD(
        _parameter_groups(model, recipe), lr=recipe["lr"], momentum=0.9, nesterov=True, weight_decay=recipe["weight_decay"]
    )
    steps_per_epoch = math.ceil(len(dataset.train) / recipe["batch_size"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    slimmed = _expand_batchnorms(model) if recipe.get("expand_gamma_l1") else []
    masks = _slimming_masks(slimmed, recipe.get("expand_gamma_l1_share", 1.0), seed)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(dataset.train), generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"{label} epoch {epoch + 1}/{epochs}", file=sys.stderr)
        for step in bar:
            idx = order[step * recipe["batch_size"] : (step + 1) * recipe["batch_size"]]
            x = dataset.normalize(augment(dataset.train.images[idx], gen)).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), dataset.train.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if slimmed:
                _add_l1_subgradient(slimmed, recipe["expand_gamma_l1"], masks)
            optimizer.step()
            scheduler.step()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        acc = evaluate(model, dataset)
        slim = f"; {_switched_off(slimmed)}" if slimmed else ""
        print(f"{label} epoch {epoch + 1}: test top-1 {acc:.4f}{slim}", file=sys.stderr, flush=True)


def train(name: str, dataset: Dataset, *, epochs: int, seed: int, out_dir: Path, recipe_overrides: dict,
          stage1_weights: Path | None = None) -> dict:
    """Train one sample (or, given stage1_weights, start from them) and run its slimming stage if it has one."""
    recipe = dict(RECIPES[name], epochs=epochs)
    if recipe_overrides:
        recipe["slimming"] = dict(recipe.get("slimming", SLIMMING_STAGE), **recipe_overrides)
    torch.manual_seed(seed)
    model = SAMPLE_ARCHITECTURES[name]().to(memory_format=torch.channels_last)  # ~1.3x faster convs on CPU
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    base = {k: v for k, v in recipe.items() if k != "slimming"}
    if stage1_weights is None:
        _train_epochs(model, dataset, recipe=base, seed=seed, label=name)
    else:
        model.load_state_dict(load_file(str(stage1_weights)))
        print(f"{name}: stage 1 from {stage1_weights}: test top-1 {evaluate(model, dataset):.4f}", file=sys.stderr)
    if "slimming" in recipe:
        # Its own generator, so stage 2 is the same whether stage 1 ran here or was loaded.
        _train_epochs(model, dataset, recipe={**base, **recipe["slimming"]}, seed=seed + 1, label=f"{name} slimming")
    seconds = time.perf_counter() - start
    model.eval()
    top1 = evaluate(model, dataset)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    fp32_path = out_dir / f"{name}.safetensors"
    save_file(state, str(fp32_path), metadata={"architecture": name})
    fp16_probe = out_dir / f".{name}.fp16.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}, str(fp16_probe))
    fp16_bytes = fp16_probe.stat().st_size
    fp16_probe.unlink()
    return {
        "architecture": name,
        "class": type(model).__name__,
        "weights": fp32_path.name,
        "params": params,
        "size_fp32_bytes": fp32_path.stat().st_size,
        "size_fp16_bytes": fp16_bytes,
        "dataset": "Fashion-MNIST",
        "input_shape": [1, 28, 28],
        "top1_test_10k": round(top1, 4),
        "eval_images": len(dataset.test),
        "training": {
            **recipe,
            "optimizer": "SGD nesterov momentum 0.9, OneCycle LR",
            "augmentation": "random 2-px translation, horizontal flip",
            "seed": seed,
            **({"stage1_weights_sha256": _sha256(stage1_weights)} if stage1_weights else {}),
            "train_images": len(dataset.train),
            "seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_subset(dataset: Dataset, *, test_count: int, train_count: int, seed: int) -> None:
    """A small, real, class-balanced slice: held-out test images plus calibration/fine-tune training images."""
    gen_idx = _balanced(dataset.test.labels, test_count, seed)
    train_idx = _balanced(dataset.train.labels, train_count, seed + 1)
    np.savez_compressed(
        BUNDLED_SUBSET,
        test_images=dataset.test.images[gen_idx, 0].numpy(),
        test_labels=dataset.test.labels[gen_idx].numpy().astype(np.uint8),
        test_source_indices=gen_idx.numpy().astype(np.int32),
        train_images=dataset.train.images[train_idx, 0].numpy(),
        train_labels=dataset.train.labels[train_idx].numpy().astype(np.uint8),
        train_source_indices=train_idx.numpy().astype(np.int32),
    )
    print(f"wrote {BUNDLED_SUBSET} ({BUNDLED_SUBSET.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


def _balanced(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    from core.data import _balanced_indices

    return torch.sort(_balanced_indices(labels, count, seed)).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(RECIPES), action="append")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subset", action="store_true", help="(re)write the bundled data subset and exit")
    parser.add_argument("--out-dir", type=Path, default=SAMPLE_MODELS_DIR,
                        help="where the weights and manifest go (default sample_models/; another folder for experiments)")
    parser.add_argument("--stage1-weights", type=Path,
                        help="start the slimming stage from these weights (the sample as trained) instead of training "
                             "the recipe's epochs again")
    parser.add_argument("--slimming-l1", type=float,
                        help="the slimming stage's L1 strength on the expansion γ (experiments)")
    parser.add_argument("--slimming-lr", type=float, help="the slimming stage's peak lr (default 0.05)")
    parser.add_argument("--slimming-share", type=float,
                        help="the share of each expansion layer's channels the L1 acts on (default 1: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_fashion_mnist(allow_download=True)
    if len(dataset.test) < 10_000:
        sys.exit(f"need the full Fashion-MNIST (found only {dataset.source}); install dataset-fashion-mnist.")
    print(f"data: {dataset.describe()}", file=sys.stderr)
    if args.subset:
        write_subset(dataset, test_count=2500, train_count=2000, seed=args.seed)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    overrides = {key: value for key, value in (("expand_gamma_l1", args.slimming_l1), ("lr", args.slimming_lr),
                                                           ("expand_gamma_l1_share", args.slimming_share))
                 if value is not None}
    manifest_path = args.out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.only or sorted(RECIPES):
        entry = train(name, dataset, epochs=args.epochs or RECIPES[name]["epochs"], seed=args.seed,
                      out_dir=args.out_dir, recipe_overrides=overrides, stage1_weights=args.stage1_weights)
        manifest[name] = entry
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"{name}: top-1 {entry['top1_test_10k']:.4f} in {entry['training']['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
