"""A spec outside the app: the coremltools / torch.ao config it maps to, as a dict / YAML, and a short
runnable Python snippet that reproduces the compression.

The config comes from the method's descriptor (``core.compress.registry``): the same ``library_config`` function
the handler builds its library objects from, so the exported config and the run cannot disagree.
``coremltools_config(spec)["config"]`` is exactly what the named config class's ``from_dict`` accepts.

Two forms: for a known model (``module=``) the per-layer ``module_name_configs`` are exactly the handler's (one
entry per layer by name, weight_threshold and the library's limits already applied); without one, a portable
form lists the overrides as patterns and leaves ``weight_threshold`` to a loop in the snippet.
"""

from __future__ import annotations

import re
import textwrap

import yaml
from torch import nn

from core.compress.registry import ARTIFACT_TORCHSCRIPT, method_descriptor
from core.specs import AnySpec, PipelineSpec


def coremltools_config(
    spec: AnySpec, *, module: nn.Module | None = None, fine_tune_steps: int | None = None
) -> dict:
    """The library call a spec maps to: api, config class and the config dict its ``from_dict`` takes.

    With `module`, the per-layer configs are the ones the handler would use on that model; `fine_tune_steps`
    (default: ⌈train_limit / batch_size⌉ × epochs, capped at max_steps) sets fine-tuning schedules.
    """
    if isinstance(spec, PipelineSpec):
        return {"pipeline": [coremltools_config(step, module=module, fine_tune_steps=fine_tune_steps) for step in spec.steps]}
    descriptor = method_descriptor(spec.method)
    layers = descriptor.planned_layers(module, spec) if module is not None else None
    return descriptor.library_config(spec, layers=layers, fine_tune_steps=fine_tune_steps)


def config_yaml(spec: AnySpec, *, module: nn.Module | None = None, fine_tune_steps: int | None = None) -> str:
    return yaml.safe_dump(
        coremltools_config(spec, module=module, fine_tune_steps=fine_tune_steps), sort_keys=False, allow_unicode=True
    )


# --------------------------------------------------------------------------- Python snippet


def _load_model_code(source_id: str) -> tuple[str, tuple[int, int, int]]:
    kind, _, rest = source_id.partition(":")
    if kind == "torchvision":
        from core.models.torchvision_route import torchvision_arch_info

        shape = torchvision_arch_info(rest).input_shape  # the crop size of its weights (e.g. 300 for efficientnet_b3)
        return (f"import torchvision\n\nmodel = torchvision.models.{rest}(weights=None)  # load your weights here\n", shape)
    if kind == "timm":
        from core.models.timm_route import timm_input_shape

        name = rest.partition(":")[0]
        return (f"import timm\n\nmodel = timm.create_model({name!r}, pretrained=False)  # checkpoint_path=… for "
                "your weights\n", timm_input_shape(name))
    shape = (1, 28, 28) if kind == "sample" or "fashion" in rest else (3, 224, 224)
    return (
        "from core.models.sources import load_model  # run from a Compression Studio checkout, or build your model\n\n"
        f"model = load_model({source_id!r}).module\n",
        shape,
    )


def _data_code(source_id: str, shape: tuple[int, int, int]) -> str:
    if source_id.startswith("sample:"):
        return textwrap.dedent(
            """
            from core.data import load_fashion_mnist

            dataset = load_fashion_mnist()
            calibration = dataset.calibration_split(size=128, seed=0)
            batches = list(dataset.batches(calibration, batch_size=32))  # (images, labels)
            """
        )
    return textwrap.dedent(
        f"""
        # Replace with real (image, label) batches; random inputs only exercise the mechanics.
        batches = [(torch.randn(32, {", ".join(map(str, shape))}), torch.randint(0, 1000, (32,))) for _ in range(4)]
        """
    )


# The compression metadata registered by coremltools.optimize.torch survives torch.export, and ct.convert writes
# LUT / quantized / sparse weights from it either way (measured: the same decoded weights as the app's traced
# export). torch.export is preferred because the TorchScript frontend fails on traced shape arithmetic (ShuffleNet's
# channel shuffle, a ViT's patch grid) under NumPy >= 2.4.
_EXPORTED_CONVERSION = textwrap.dedent(
    """
    # coremltools.optimize.torch registered the compression as metadata on the model; ct.convert keeps LUT /
    # quantized / sparse weights in the file.
    program = torch.export.export(model.eval(), (example,)).run_decompositions({})
    mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18)
    """
)
# A W8A8 model carries fake-quantize modules, which torch.export cannot capture yet ("quantized nyi in meta
# tensors"), so it converts from a trace (on NumPy >= 2.4 a graph with shape arithmetic needs NumPy < 2.4 here).
_TRACED_CONVERSION = textwrap.dedent(
    """
    # W8A8 converts from a trace: torch.export cannot capture fake-quantize modules yet.
    mlmodel = ct.convert(torch.jit.trace(model.eval(), example), inputs=[ct.TensorType(shape=example.shape)],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18)
    """
)


def python_snippet(*, spec: AnySpec, source_id: str, export: bool = True) -> str:
    """A short, runnable script that reproduces the compression outside the app (and writes the .mlpackage)."""
    load, shape = _load_model_code(source_id)
    steps = list(spec.steps) if isinstance(spec, PipelineSpec) else [spec]
    needs_data = any(s.workflow != "data_free" for s in steps)
    body = [
        f'"""Reproduces: {spec.summary()} on {source_id} (generated by Compression Studio)."""\n',
        "import re\n\nimport coremltools as ct\nimport torch\n",
        load,
        f"model.eval()\nexample = torch.randn(1, {', '.join(map(str, shape))})\n",
    ]
    if needs_data:
        body.append(_data_code(source_id, shape))
    for index, step in enumerate(steps):
        body.append(f"\n# ---- step {index + 1}: {step.summary()}")
        body.append(method_descriptor(step.method).snippet(step, coremltools_config(step), f"config_{index + 1}"))
    # a step applied to the converted .mlpackage (palettize's uniform / unique modes) converts by itself
    coreml_side = any(coremltools_config(s)["api"].startswith("coremltools.optimize.coreml.") for s in steps)
    torch_side = any(method_descriptor(s.method).artifact_kind == ARTIFACT_TORCHSCRIPT for s in steps)
    if export and not torch_side:
        if not coreml_side:
            fake_quantized = any(s.method == "quantize_activations" for s in steps)
            body.append(_TRACED_CONVERSION if fake_quantized else _EXPORTED_CONVERSION)
        body.append('mlmodel.save("compressed.mlpackage")\n')
    elif export and torch_side:
        body.append('torch.jit.save(torch.jit.trace(model, example), "compressed.pt")\n')
    code = "\n".join(part.rstrip("\n") + "\n" for part in body)
    compile(code, "<recipe>", "exec")  # a generated snippet must at least be valid Python
    return re.sub(r"\n{3,}", "\n\n\n", code)
