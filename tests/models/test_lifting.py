"""Lifting graph calls to real Conv2d / Linear layers: same outputs, same layer names, reasons for what stays."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.export import Dim

from core.compress.layers import weight_layers
from core.models.lifting import lift_graph_module


def _exported_module(module: nn.Module, example: torch.Tensor, *, dynamic: bool = True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapes = ({0: Dim("batch")},) if dynamic else None
        return torch.export.export(module.eval(), (example,), dynamic_shapes=shapes).module()


class TinyViT(nn.Module):
    """Patch conv, a class token, one MultiheadAttention block (in_proj_weight, not a module) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 16, 7, stride=7)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], 1)
        tokens = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(self.norm(tokens[:, 0]))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_lift_with_equal_outputs_and_layer_names(arch):
    torch.manual_seed(0)
    module = getattr(torchvision.models, arch)(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    lifted, report = lift_graph_module(_exported_module(module, x))
    assert set(weight_layers(lifted)) == set(weight_layers(module))  # layer1.0.conv1 … as on the nn.Module route
    assert set(report.lifted) == set(weight_layers(module)) and not report.unlifted
    assert all(isinstance(layer, nn.Conv2d | nn.Linear) for layer in weight_layers(lifted).values())
    norms = {name for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert {name for name, m in lifted.named_modules() if isinstance(m, nn.BatchNorm2d)} == norms  # real BN too
    x3 = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(lifted(x3), module(x3), atol=1e-5)
        lifted.train(), module.train()  # BatchNorm / Dropout now follow train() as on the Python model
        torch.manual_seed(1)
        trained_mode = lifted(x3)
        torch.manual_seed(1)
        assert torch.allclose(trained_mode, module(x3), atol=1e-4)


def test_multihead_attention_in_proj_weight_gets_its_own_path():
    module = TinyViT().eval()
    x = torch.randn(2, 1, 28, 28)
    lifted, report = lift_graph_module(_exported_module(module, x))
    assert report.lifted == {"patch": "Conv2d", "attn.in_proj": "Linear", "attn.out_proj": "Linear", "head": "Linear"}
    assert lifted.get_submodule("attn.in_proj").weight.shape == (48, 16)
    with torch.no_grad():
        assert torch.allclose(lifted(x), module(x), atol=1e-5)


def test_static_batch_program_runs_other_batches_after_lifting():
    module = torchvision.models.resnet18(num_classes=10).eval()
    graph = _exported_module(module, torch.randn(1, 3, 32, 32), dynamic=False)
    with pytest.raises(Exception, match="Guard failed"):
        graph(torch.randn(2, 3, 32, 32))  # ExportedProgram.module() pins the example's batch of 1
    lifted, _ = lift_graph_module(graph)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(lifted(x), module(x), atol=1e-5)
    lifted.train()  # a plain GraphModule again: ExportedProgram.module() makes train()/eval() raise
    lifted.eval()


class _ComputedAndTransposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 2, 2, stride=2)
        self.scale = nn.Parameter(torch.ones(10, 2 * 56 * 56))
        self.head = nn.Linear(2 * 56 * 56, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(x).flatten(1)
        return nn.functional.linear(y, self.head.weight * self.scale, self.head.bias)


def test_calls_that_cannot_be_lifted_are_reported_with_reasons():
    module = _ComputedAndTransposed().eval()
    x = torch.randn(2, 1, 28, 28)
    graph = _exported_module(module, x)
    lifted, report = lift_graph_module(graph)
    reasons = " | ".join(u.reason for u in report.unlifted)
    assert "a transposed convolution" in reasons and "computed in the graph" in reasons
    assert report.lifted == {}
    assert not any(isinstance(layer, nn.Conv2d | nn.Linear) for layer in weight_layers(lifted).values())
    assert "left as graph functions and not compressible" in report.summary()
    with torch.no_grad():
        assert torch.allclose(lifted(x), module(x), atol=1e-5)


def test_lifting_leaves_its_input_unchanged():
    module = TinyViT().eval()
    graph = _exported_module(module, torch.randn(2, 1, 28, 28))
    before = [(n.op, str(n.target)) for n in graph.graph.nodes]
    lift_graph_module(graph)
    assert [(n.op, str(n.target)) for n in graph.graph.nodes] == before


def test_fused_self_attention_traced_in_inference_becomes_two_linear_layers_that_convert(tmp_path):
    """nn.MultiheadAttention traced under no_grad is one aten._native_multi_head_attention call (its fast path),
    which coremltools cannot convert and holds no Linear to compress; lifting rewrites it into its two projections."""
    from core.export import export_coreml
    from core.library_internals import torchscript_to_exported

    module = TinyViT().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        script = torch.jit.trace(module, x, check_trace=False)
        assert "_native_multi_head_attention" in str(script.inlined_graph)  # the fused fast path was traced
        program = torchscript_to_exported(script, (x,))
    lifted, report = lift_graph_module(program.module())
    assert report.lifted == {"patch": "Conv2d", "attn.in_proj": "Linear", "attn.out_proj": "Linear", "head": "Linear"}
    assert not report.unlifted
    x3 = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(lifted(x3), module(x3), atol=1e-5)
    package = export_coreml(module=lifted, input_shape=(1, 28, 28), path=tmp_path / "vit.mlpackage")
    assert (package / "Data").is_dir()


def test_aliases_are_dropped_so_the_graph_converts(tmp_path):
    """A torch.export capture of Swin's window slicing holds aten.alias calls, which coremltools cannot convert."""
    from core.export import export_coreml

    class Aliasing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.head = nn.Linear(4, 10)

        def forward(self, x):
            return self.head(torch.ops.aten.alias(self.conv(x)).mean((2, 3)))

    module = Aliasing().eval()
    x = torch.randn(2, 1, 28, 28)
    lifted, report = lift_graph_module(_exported_module(module, x))
    assert not [n for n in lifted.graph.nodes if "alias" in str(n.target)]
    assert set(report.lifted) == {"conv", "head"}
    with torch.no_grad():
        assert torch.equal(lifted(x), module(x))
    export_coreml(module=lifted, input_shape=(1, 28, 28), path=tmp_path / "aliasing.mlpackage")
