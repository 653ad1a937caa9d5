"""Fixtures and helpers shared by every test folder (a test module imports helpers from here, never from another
test module)."""

from __future__ import annotations

import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

from core.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from core.models.architectures import FashionCNN
from core.models.sources import LoadedModel


class HalvesUntilSmall(nn.Module):
    """A data-dependent while loop: torch's TorchScript → torch.export converter has no rule for prim::Loop."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        while bool(y.abs().max() > 1.0):
            y = y / 2
        return y


@pytest.fixture
def unconvertible_torchscript(tmp_path: Path) -> Path:
    """A scripted Fashion-MNIST-shaped classifier (1×28×28 → 10) that stays TorchScript: it cannot become a graph."""
    path = tmp_path / "loops.pt"
    torch.jit.save(torch.jit.script(HalvesUntilSmall().eval()), str(path))
    return path


# --------------------------------------------------------------------------- small real models


class LibraryLinear(nn.Linear):
    """Like timm's Linear: nn.Linear with its own forward (FX traces into it, as it is not a torch.nn class)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class TinyNet(nn.Module):
    """Conv+BN+ReLU ×2, a residual block (the add static int8 must quantize), and two Linear layers (~18 k weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)  # 72 weights: below the default threshold
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)  # 1,152
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)  # 4,608
        self.conv4 = nn.Conv2d(32, 32, 3, padding=1, bias=False)  # 9,216 (residual branch)
        self.bn4 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32, 64)  # 2,048
        self.fc2 = nn.Linear(64, 10)  # 640

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.bn4(self.conv4(x)) + x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def _randomise_batchnorm(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        if isinstance(sub, nn.BatchNorm2d):
            n = sub.num_features
            sub.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            sub.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            sub.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            sub.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def loaded(module: nn.Module, *, dataset: str | None = "fashion_mnist", label: str = "tiny") -> LoadedModel:
    return LoadedModel(
        source_id=f"test:{label}",
        label=label,
        module=module.eval(),
        architecture=label,
        input_shape=(1, 28, 28),
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        num_classes=10,
        dataset=dataset,
        accuracy_meaningful=False,
        weights_note="random initialisation (test model)",
        class_names=FASHION_MNIST_CLASSES,
    )


def tiny_model(*, seed: int = 0, dataset: str | None = "fashion_mnist") -> LoadedModel:
    torch.manual_seed(seed)
    module = TinyNet()
    _randomise_batchnorm(module, seed)
    return loaded(module, dataset=dataset, label="tiny")


def fashion_cnn_model(*, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    module = FashionCNN()
    _randomise_batchnorm(module, seed)
    return loaded(module, label="fashion_cnn")


def state_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_unchanged(module: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    current = module.state_dict()
    assert set(current) == set(snapshot), "the input model gained or lost state entries"
    for key, value in snapshot.items():
        assert torch.equal(current[key], value), f"the input model was modified: {key}"


def tiny_rgb_model() -> LoadedModel:
    """A random 3×8×8 → 5-class CNN with no dataset (synthetic inputs only)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 5))
    return LoadedModel(
        source_id="test:tiny", label="tiny (random)", module=module.eval(), architecture="tiny", input_shape=(3, 8, 8),
        mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=5, dataset=None, accuracy_meaningful=False,
        weights_note="random initialisation — accuracy numbers are meaningless",
    )


# --------------------------------------------------------------------------- measured on the weights (not the engine's report)


def max_distinct_per_group(weight: torch.Tensor, group_size: int | None = None) -> int:
    """Most distinct values in any group of `group_size` output channels (None: the whole tensor)."""
    rows = weight.shape[0]
    size = rows if group_size is None else group_size
    return max(torch.unique(weight[i : i + size]).numel() for i in range(0, rows, size))


def max_distinct_vectors(weight: torch.Tensor, cluster_dim: int) -> int:
    """Distinct cluster_dim-long vectors along the output-channel axis (vector palettization)."""
    flat = weight.flatten(1).transpose(0, 1).reshape(-1, cluster_dim)
    return torch.unique(flat, dim=0).shape[0]


def max_distinct_per_block(weight: torch.Tensor, block_size: int) -> int:
    """Most distinct values in any [1 × block_size × kernel] block along the input channels."""
    worst = 0
    for row in weight:
        for start in range(0, row.shape[0], block_size):
            worst = max(worst, torch.unique(row[start : start + block_size]).numel())
    return worst


def sparsity(weight: torch.Tensor) -> float:
    return float((weight == 0).float().mean())


# --------------------------------------------------------------------------- records and reports


def make_record(
    *,
    method: str = "palettize",
    summary: str = "4-bit palettization, data-free",
    accuracy: float = 0.90,
    baseline: float = 0.92,
    size: int = 400_000,
    latency: float = 1.0,
    model: str = "sample:fashion_cnn",
) -> dict:
    """A record with the fields of the measurement contract (values invented for the test)."""
    return {
        "model": model,
        "model_label": "fashion_cnn (sample)",
        "spec": {"method": method, "workflow": "data_free", "n_bits": 4, "overrides": {}},
        "spec_summary": summary,
        "method": method,
        "workflow": "data_free",
        "created_at": "2025-01-01T12:00:00",
        "compress_seconds": 2.5,
        "dataset": "Fashion-MNIST",
        "dataset_source": "bundled subset",
        "eval_images": 2000,
        "accuracy_meaningful": True,
        "accuracy_top1": accuracy,
        "accuracy_top5": 0.99,
        "baseline_accuracy_top1": baseline,
        "baseline_accuracy_top5": 0.995,
        "per_class_accuracy": [accuracy] * 9 + [accuracy - 0.1],
        "baseline_per_class_accuracy": [baseline] * 10,
        "class_names": [f"class{i}" for i in range(10)],
        "agreement_top1": 0.97,
        "output_snr_db": 25.0,
        "output_psnr_db": 40.0,
        "flipped": 2,
        "flipped_images": [{"index": 3, "true": 1, "before": 1, "after": 2}, {"index": 7, "true": 0, "before": 6, "after": 0}],
        "size_bytes": size,
        "size_fp32_bytes": 3_200_000,
        "size_fp16_bytes": 1_600_000,
        "theoretical_size_bytes": size - 1000,
        "size_breakdown": {"indices": size * 0.8, "luts": 2000, "uncompressed": size * 0.2 - 3000},
        "bits_per_weight": 4.1,
        "compression_ratio_fp16": 1_600_000 / size,
        "compression_ratio_fp32": 3_200_000 / size,
        "latency_ms_p50": latency,
        "latency_ms_p90": latency * 1.2,
        "baseline_latency_ms_p50": 1.0,
        "baseline_latency_ms_p90": 1.1,
        "latency_ratio": latency / 1.0,
        "latency_note": "weights are decompressed in PyTorch on the CPU, so latency does not drop",
        "threads": 2,
        "machine": {"cpu": "test cpu", "threads": 2},
        "layers": [
            {"name": "features.0", "type": "Conv2d", "shape": [32, 1, 3, 3], "params": 288, "compressed": False,
             "reason": "below weight_threshold (288 < 2048)", "sparsity": 0.0, "snr_db": None},
            {"name": "classifier.1", "type": "Linear", "shape": [256, 3136], "params": 802816, "compressed": True,
             "method": "palettize", "bits": 4, "n_luts": 1, "lut_entries": 16, "lut_bits": 16, "sparsity": 0.0,
             "snr_db": 21.5},
        ],
        "notes": ["a captured library warning"],
        "calibration_source": None,
    }


class ReportScripts(HTMLParser):
    """The <script> / <link> tags of an HTML page: what a self-contained report must not fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.inline_sizes: list[int] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self._in_script = True
            self.inline_sizes.append(0)
            if attributes.get("src"):
                self.sources.append(str(attributes["src"]))
        if tag == "link" and attributes.get("href"):
            self.links.append(str(attributes["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_sizes[-1] += len(data)


# --------------------------------------------------------------------------- the run's own timing lock


def pytest_configure(config: pytest.Config) -> None:
    """One timing lock for the whole test run: the servers and workers it starts, and the pytest-xdist workers
    (started after this hook, they inherit the environment), share it, so the run's own timings never overlap, and
    another test run or a dashboard on the same machine does not hold it up for minutes."""
    from core.jobs.timing_lock import TIMING_LOCK_ENV

    if os.environ.get(TIMING_LOCK_ENV):  # chosen by whoever started the run (or by the xdist controller)
        return
    folder = Path(tempfile.mkdtemp(prefix="studio-timing-"))
    os.environ[TIMING_LOCK_ENV] = str(folder / "timing.lock")
    config.add_cleanup(lambda: (os.environ.pop(TIMING_LOCK_ENV, None), shutil.rmtree(folder, ignore_errors=True)))


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/e2e drives a browser: marked `browser` by its place, so a new file there cannot be left
    out of the mark (`make test-fast` skips it)."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.browser)


# A test that is not marked slow yet takes this long makes `make test-fast` slow for everyone: the run names it.
UNMARKED_SLOW_SECONDS = 10.0
GROUPS_LEFT_OUT_OF_FAST = {"slow", "browser", "ray"}
_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > UNMARKED_SLOW_SECONDS \
            and not GROUPS_LEFT_OUT_OF_FAST & set(report.keywords):
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _unmarked_slow:
        return
    terminalreporter.section(f"tests over {UNMARKED_SLOW_SECONDS:.0f} s not marked slow")
    for seconds, nodeid in sorted(_unmarked_slow, reverse=True):
        terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
    terminalreporter.write_line("Mark them @pytest.mark.slow (make test-fast leaves them out) or make them cheaper; "
                                "a machine busy with other work stretches every time.")
