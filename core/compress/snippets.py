"""Building blocks of the config export's Python snippet, shared by the method modules (each writes its own step)."""

from __future__ import annotations

import pprint
import textwrap

from core.specs import CompressionSpec


def names(entry: dict) -> tuple[str, str, str]:
    """(python module, api class name, config class name) of a config entry."""
    module, _, config_class = entry["config_class"].rpartition(".")
    return module, entry["api"].rpartition(".")[2], config_class


def build_expression(entry: dict, var: str) -> str:
    return f"{names(entry)[2]}.from_dict({var})"


def head(spec: CompressionSpec, entry: dict, var: str, *, plain_names: bool = False) -> str:
    """Import the API, write the config dict, and apply weight_threshold (and, for APIs that look layers up by
    plain name, expand the override patterns) against the model's layers."""
    module, api, config_class = names(entry)
    config = pprint.pformat(entry["config"], sort_dicts=False)  # Python literals (True/None), not JSON
    code = f"\nfrom {module} import {api}, {config_class}\n\n{var} = {config}\n"
    if plain_names:
        code += textwrap.dedent(
            f"""
            # {api} looks layers up by plain module name: resolve the override patterns (first match wins).
            patterns = {var}.pop("module_name_configs", {{}})
            {var}["module_name_configs"] = {{}}
            for name, _layer in model.named_modules():
                match = next((p for p in patterns if re.fullmatch(p, name)), None)
                if match is not None:
                    {var}["module_name_configs"][name] = patterns[match]
            """
        )
    threshold = entry.get("weight_threshold", 0)
    if threshold:
        key = "name" if plain_names else "re.escape(name)"
        code += textwrap.dedent(
            f"""
            # weight_threshold: layers with at most {threshold} weights stay uncompressed (listed first: first match wins)
            small = {{
                {key}: None
                for name, layer in model.named_modules()
                if getattr(layer, "weight", None) is not None and layer.weight.ndim >= 2 and layer.weight.numel() <= {threshold}
            }}
            {var}["module_name_configs"] = {{**small, **{var}.get("module_name_configs", {{}})}}
            """
        )
    return code


def fine_tune_loop(spec: CompressionSpec, entry: dict, var: str, *, prepare_args: str = "inplace=True") -> str:
    """The shared fine-tuning loop (DKM, QAT, gradual pruning): the compressor steps after each optimiser step."""
    api = names(entry)[1]
    return textwrap.dedent(
        f"""
        compressor = {api}(model, {build_expression(entry, var)})
        prepared = compressor.prepare({prepare_args})
        optimizer = torch.optim.Adam(prepared.parameters(), lr={spec.learning_rate})
        prepared.train()
        steps = {entry.get("fine_tune_steps", "len(batches)")}  # the schedule in the config assumes this many steps
        step = 0
        while step < steps:
            for images, labels in batches[: steps - step]:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(prepared(images), labels).backward()
                optimizer.step()
                compressor.step()
                step += 1
        prepared.eval()
        model = compressor.finalize(inplace=True)
        """
    )
