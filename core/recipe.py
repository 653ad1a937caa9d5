"""The recipe of a spec outside the app: the coremltools / torch.ao config it maps to, as a dict / YAML, and a short
runnable Python snippet that reproduces the compression.

`coremltools_config(spec)["config"]` is exactly what the named config class's ``from_dict`` accepts.
Per-layer overrides become ``module_name_configs`` (regexes wrapped for coremltools' ``re.fullmatch``);
``weight_threshold`` has no torch-side field, so the snippet turns it into per-layer ``None`` entries.
"""

from __future__ import annotations

import pprint
import re
import textwrap

import yaml

from core.specs import (
    AnySpec,
    CompressionSpec,
    PalettizeSpec,
    PipelineSpec,
    PruneSpec,
    QuantizeActivationsSpec,
    QuantizeWeightsSpec,
    TorchDynamicSpec,
    TorchStaticSpec,
)

_TORCH_OPT = "coremltools.optimize.torch"


def _fullmatch_pattern(search_pattern: str) -> str:
    """The app matches overrides with re.search; coremltools uses re.fullmatch."""
    return f".*(?:{search_pattern}).*"


def _palettize_module(spec: PalettizeSpec) -> dict:
    config: dict = {"n_bits": spec.n_bits, "granularity": spec.granularity}
    if spec.granularity == "per_grouped_channel":
        config["group_size"] = spec.group_size
    if spec.cluster_dim > 1:
        config["cluster_dim"] = spec.cluster_dim
    config["enable_per_channel_scale"] = spec.enable_per_channel_scale
    if spec.workflow == "fine_tune":
        config["lut_dtype"] = "i8" if spec.lut_dtype == "int8" else "f32"
        config["weight_threshold"] = spec.weight_threshold
        config["milestone"] = 0
    elif spec.lut_dtype == "int8":
        config["lut_dtype"] = "int8"
    return config


def _quantize_module(spec: QuantizeWeightsSpec) -> dict:
    scheme = "symmetric" if spec.mode == "symmetric" else "affine"
    if spec.workflow == "fine_tune":
        return {
            "weight_dtype": "qint8" if spec.dtype == "int8" else "qint4",
            "weight_per_channel": True,
            "activation_dtype": "float32",
            "quantization_scheme": scheme,
            "milestones": [0, 0, 80, 50],
        }
    config: dict = {"granularity": spec.granularity, "quantization_scheme": scheme}
    if spec.workflow == "calibration":
        config = {"algorithm": "gptq", "weight_dtype": "uint8" if spec.dtype == "int8" else "uint4", **config}
    else:
        config = {"weight_dtype": spec.dtype, **config}
    if spec.granularity == "per_block":
        config["block_size"] = spec.block_size
    return config


def _prune_module(spec: PruneSpec) -> dict:
    config: dict = {}
    if spec.structure == "n_m":
        config["n_m_ratio"] = list(spec.n_m)
    else:
        config["target_sparsity"] = float(spec.target_sparsity)
        if spec.structure == "block":
            config["block_size"] = spec.block_size
    config["scheduler"] = (
        {"update_steps": "range(1, 76, 4)"} if spec.workflow == "fine_tune" else {"begin_step": 0}
    )
    return config


def _with_overrides(spec: CompressionSpec, global_config: dict, module_config) -> dict:
    config = {"global_config": global_config}
    if spec.overrides:
        config["module_name_configs"] = {
            _fullmatch_pattern(pattern): None if partial is None else module_config(spec.for_layer_values(partial))
            for pattern, partial in spec.overrides.items()
        }
    return config


def coremltools_config(spec: AnySpec) -> dict:
    """The library call a spec maps to: api, config class and the config dict its ``from_dict`` takes."""
    if isinstance(spec, PipelineSpec):
        return {"pipeline": [coremltools_config(step) for step in spec.steps]}
    if isinstance(spec, PalettizeSpec):
        if spec.mode != "kmeans":
            global_config = {"mode": spec.mode, "granularity": spec.granularity, "weight_threshold": spec.weight_threshold}
            if spec.mode == "uniform":
                global_config["nbits"] = spec.n_bits
            if spec.granularity == "per_grouped_channel":
                global_config["group_size"] = spec.group_size
            global_config["enable_per_channel_scale"] = spec.enable_per_channel_scale
            return {
                "api": "coremltools.optimize.coreml.palettize_weights",
                "config_class": "coremltools.optimize.coreml.OptimizationConfig",
                "config": {"config_type": "OpPalettizerConfig", "global_config": global_config},
                "note": f"mode '{spec.mode}' exists only on the Core ML side; apply it to the converted .mlpackage.",
            }
        api, cls = {
            "data_free": ("PostTrainingPalettizer", "PostTrainingPalettizerConfig"),
            "calibration": ("SKMPalettizer", "SKMPalettizerConfig"),
            "fine_tune": ("DKMPalettizer", "DKMPalettizerConfig"),
        }[spec.workflow]
        config = _with_overrides(spec, _palettize_module(spec), _palettize_module)
        if spec.workflow == "calibration":
            config["calibration_nsamples"] = spec.calibration_samples
        return _entry(f"{_TORCH_OPT}.palettization", api, cls, config, spec)
    if isinstance(spec, QuantizeWeightsSpec):
        module, api, cls = {
            "data_free": (f"{_TORCH_OPT}.quantization", "PostTrainingQuantizer", "PostTrainingQuantizerConfig"),
            "calibration": (f"{_TORCH_OPT}.layerwise_compression", "LayerwiseCompressor", "LayerwiseCompressorConfig"),
            "fine_tune": (f"{_TORCH_OPT}.quantization", "LinearQuantizer", "LinearQuantizerConfig"),
        }[spec.workflow]
        config = _with_overrides(spec, _quantize_module(spec), _quantize_module)
        if spec.workflow == "calibration":
            config["calibration_nsamples"] = spec.calibration_samples
        return _entry(module, api, cls, config, spec)
    if isinstance(spec, QuantizeActivationsSpec):
        scheme = "symmetric" if spec.mode == "symmetric" else "affine"
        milestones = [0, 1000, 1000, 0] if spec.workflow == "calibration" else [0, 0, 80, 50]
        config = {"global_config": {"quantization_scheme": scheme, "weight_per_channel": True, "milestones": milestones}}
        return _entry(f"{_TORCH_OPT}.quantization", "LinearQuantizer", "LinearQuantizerConfig", config, spec)
    if isinstance(spec, PruneSpec):
        config = _with_overrides(spec, _prune_module(spec), _prune_module)
        return _entry(f"{_TORCH_OPT}.pruning", "MagnitudePruner", "MagnitudePrunerConfig", config, spec)
    if isinstance(spec, TorchDynamicSpec):
        return {
            "api": "torch.ao.quantization.quantize_dynamic",
            "config": {"qconfig_spec": ["Linear"], "dtype": "qint8" if spec.dtype == "int8" else "float16"},
        }
    if isinstance(spec, TorchStaticSpec):
        return {
            "api": "torch.ao.quantization.quantize_fx." + ("prepare_qat_fx" if spec.workflow == "fine_tune" else "prepare_fx"),
            "config": {
                "backend": spec.backend,
                "qconfig_mapping": f"get_default_{'qat_' if spec.workflow == 'fine_tune' else ''}qconfig_mapping('{spec.backend}')",
                "weights": "per_channel" if spec.per_channel else "per_tensor",
                "calibration_samples": spec.calibration_samples,
                "skip_layers": [p for p, v in spec.overrides.items() if v is None],
            },
        }
    raise TypeError(f"no recipe for {type(spec).__name__}")


def _entry(module: str, api: str, cls: str, config: dict, spec: CompressionSpec) -> dict:
    entry = {"api": f"{module}.{api}", "config_class": f"{module}.{cls}", "config": config, "workflow": spec.workflow}
    if getattr(spec, "weight_threshold", 0) and not (isinstance(spec, PalettizeSpec) and spec.workflow == "fine_tune"):
        entry["weight_threshold"] = spec.weight_threshold
    return entry


def recipe_yaml(spec: AnySpec) -> str:
    return yaml.safe_dump(coremltools_config(spec), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- Python snippet


def _load_model_code(source_id: str) -> tuple[str, tuple[int, int, int]]:
    kind, _, rest = source_id.partition(":")
    if kind == "torchvision":
        return (f"import torchvision\n\nmodel = torchvision.models.{rest}(weights=None)  # load your weights here\n", (3, 224, 224))
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


def _step_code(spec: CompressionSpec, recipe: dict, var: str) -> str:
    """Code that compresses `model` in place with one step and leaves the result in `model`."""
    config = pprint.pformat(recipe.get("config"), sort_dicts=False)  # Python literals (True/None), not JSON
    threshold = getattr(spec, "weight_threshold", 0)
    skip_small = textwrap.dedent(
        f"""
        # weight_threshold: layers with at most {threshold} weights stay uncompressed
        for name, layer in model.named_modules():
            w = layer._parameters.get("weight")
            if w is not None and w.ndim >= 2 and w.numel() <= {threshold}:
                {var}.setdefault("module_name_configs", {{}})[re.escape(name)] = None
        """
    ) if threshold else ""
    if isinstance(spec, PalettizeSpec) and spec.mode != "kmeans":
        return textwrap.dedent(
            f"""
            # mode '{spec.mode}' exists on the Core ML side: convert first, then palettize the .mlpackage.
            import coremltools.optimize.coreml as cto

            mlmodel = ct.convert(torch.jit.trace(model.eval(), example), inputs=[ct.TensorType(shape=example.shape)],
                                 convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18)
            mlmodel = cto.palettize_weights(mlmodel, cto.OptimizationConfig.from_dict({recipe["config"]!r}))
            """
        )
    api = recipe.get("api", "")
    if api.startswith("torch.ao"):
        if isinstance(spec, TorchDynamicSpec):
            dtype = "torch.qint8" if spec.dtype == "int8" else "torch.float16"
            return f"\nmodel = torch.ao.quantization.quantize_dynamic(model.eval(), {{torch.nn.Linear}}, dtype={dtype})\n"
        return textwrap.dedent(
            f"""
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            torch.backends.quantized.engine = "{spec.backend}"
            prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("{spec.backend}"), example_inputs=(example,))
            with torch.no_grad():
                for images, _ in batches:
                    prepared(images)
            model = convert_fx(prepared)  # real int8 modules; save with torch.jit.save(torch.jit.trace(model, example), ...)
            """
        )
    module, _, cls_name = recipe["config_class"].rpartition(".")
    _, _, api_name = api.rpartition(".")
    head = f"\nfrom {module} import {api_name}, {cls_name}\n\n{var} = {config}\n{skip_small}"
    build = f"{cls_name}.from_dict({var})"
    workflow = spec.workflow
    if api_name in ("PostTrainingPalettizer", "PostTrainingQuantizer"):
        return head + f"model = {api_name}(model, {build}).compress()\n"
    if api_name == "SKMPalettizer":
        return head + textwrap.dedent(
            f"""
            def loss_fn(net, data):
                images, labels = data
                return torch.nn.functional.cross_entropy(net(images), labels)

            samples = [(x[i : i + 1], y[i : i + 1]) for x, y in batches for i in range(len(x))]
            model = SKMPalettizer(model.eval(), {build}).compress(dataloader=samples, loss_fn=loss_fn)
            """
        )
    if api_name == "LayerwiseCompressor":
        return head + textwrap.dedent(
            f"""
            # LayerwiseCompressor needs a sequential model (each child feeding the next); the app runs the same
            # GPTQ algorithm per layer for non-sequential networks.
            model = LayerwiseCompressor(model.eval(), {build}).compress([x for x, _ in batches], device="cpu")
            """
        )
    if api_name == "MagnitudePruner" and workflow == "data_free":
        return head + textwrap.dedent(
            f"""
            pruner = MagnitudePruner(model, {build})
            pruner.prepare(inplace=True)
            pruner.step()  # constant schedule: target sparsity at the first step
            model = pruner.finalize(inplace=True)
            """
        )
    if api_name == "LinearQuantizer" and workflow == "calibration":
        return head + textwrap.dedent(
            f"""
            quantizer = LinearQuantizer(model, {build})
            prepared = quantizer.prepare(example_inputs=(example,), inplace=True)
            quantizer.step()  # milestone 0: observers on; milestone 3: BatchNorm frozen
            with torch.no_grad():
                for images, _ in batches:
                    prepared(images)
            prepared.eval()
            model = quantizer.finalize(inplace=True)
            """
        )
    # fine-tuning: DKMPalettizer, LinearQuantizer (QAT), MagnitudePruner with a polynomial schedule
    prepare_args = "example_inputs=(example,), inplace=True" if api_name == "LinearQuantizer" else "inplace=True"
    return head + textwrap.dedent(
        f"""
        compressor = {api_name}(model, {build})
        prepared = compressor.prepare({prepare_args})
        optimizer = torch.optim.Adam(prepared.parameters(), lr={spec.learning_rate})
        prepared.train()
        for epoch in range({spec.epochs}):
            for images, labels in batches:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(prepared(images), labels).backward()
                optimizer.step()
                compressor.step()
        prepared.eval()
        model = compressor.finalize(inplace=True)
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
        body.append(_step_code(step, coremltools_config(step), f"config_{index + 1}"))
    coreml_side = any(isinstance(s, PalettizeSpec) and s.mode != "kmeans" for s in steps)
    torch_side = any(isinstance(s, TorchDynamicSpec | TorchStaticSpec) for s in steps)
    if export and not torch_side:
        if not coreml_side:
            body.append(
                textwrap.dedent(
                    """
                    # The compression metadata registered by coremltools.optimize.torch makes ct.convert keep
                    # LUT / quantized / sparse weights in the file.
                    mlmodel = ct.convert(torch.jit.trace(model.eval(), example), inputs=[ct.TensorType(shape=example.shape)],
                                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18)
                    """
                )
            )
        body.append('mlmodel.save("compressed.mlpackage")\n')
    elif export and torch_side:
        body.append('torch.jit.save(torch.jit.trace(model, example), "compressed.pt")\n')
    code = "\n".join(part.rstrip("\n") + "\n" for part in body)
    compile(code, "<recipe>", "exec")  # a generated snippet must at least be valid Python
    return re.sub(r"\n{3,}", "\n\n\n", code)
