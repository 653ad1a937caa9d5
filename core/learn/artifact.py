"""Lesson 7: where an .mlpackage's bytes go — the theoretical breakdown checked against a real exported artifact.

The whole model is compressed by ``core.compress.compress`` (what the Compress page runs) and exported by
``core.export`` to an iOS18 .mlpackage. Then the package is read back: every tensor the program stores in
``weights/weight.bin`` is a blob with a 64-byte header that records its size, and the op that consumes it says
what it is (``constexpr_lut_to_dense``'s ``indices`` and ``lut``, ``constexpr_sparse_to_dense``'s ``mask`` and
``nonzero_data``, ``constexpr_blockwise_shift_scale``'s ``data``, ``scale`` and ``offset``; plain ``const``
tensors are stored fp16). Summed per kind, these are the artifact's own numbers, set next to
``core.measure.size.theoretical_size`` (the product's storage model).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.compress import compress
from core.data import Dataset
from core.export import export_coreml
from core.library_internals import MLPACKAGE_WEIGHT_FILE, mlpackage_weight_files, weight_blob_data_bytes
from core.measure.size import BREAKDOWN_KEYS, SizeEstimate, float_param_count, path_size_bytes, theoretical_size
from core.models.sources import LoadedModel
from core.progress import Progress, as_progress
from core.specs import AnySpec

# (consuming op, its input) → the kind of bytes, in core.measure.size's BREAKDOWN_KEYS
ROLES: dict[tuple[str, str], str] = {
    ("constexpr_lut_to_dense", "indices"): "indices",
    ("constexpr_lut_to_dense", "lut"): "luts",
    ("constexpr_lut_to_dense", "vector_axis"): "indices",
    ("constexpr_sparse_to_dense", "mask"): "masks",
    ("constexpr_sparse_to_dense", "nonzero_data"): "sparse_values",
    ("constexpr_blockwise_shift_scale", "data"): "quantized_weights",
    ("constexpr_blockwise_shift_scale", "scale"): "scales",
    ("constexpr_blockwise_shift_scale", "offset"): "zero_points",
    ("constexpr_sparse_blockwise_shift_scale", "data_mask"): "masks",
    ("constexpr_sparse_blockwise_shift_scale", "nonzero_data"): "quantized_weights",
    ("constexpr_sparse_blockwise_shift_scale", "scale"): "scales",
    ("constexpr_sparse_blockwise_shift_scale", "offset"): "zero_points",
    ("constexpr_lut_to_sparse", "indices_mask"): "masks",
    ("constexpr_lut_to_sparse", "indices_nonzero_data"): "indices",
    ("constexpr_lut_to_sparse", "lut"): "luts",
}
KIND_LABELS = {
    "indices": "LUT indices", "luts": "LUTs", "quantized_weights": "integer weights", "sparse_values": "non-zero values (fp16)",
    "masks": "sparsity bitmasks", "scales": "scales", "zero_points": "zero-points", "uncompressed": "fp16 (dense weights, biases, BatchNorm)",
}


@dataclass(frozen=True)
class StoredBlob:
    """One tensor in weight.bin: its name, what it is, and its data bytes as the blob header records them."""

    name: str
    kind: str
    consumer: str  # "constexpr_lut_to_dense.indices", "conv.weight", …
    data_bytes: int


@dataclass(frozen=True)
class ArtifactBytes:
    """An .mlpackage read back: every stored blob, and how the bytes on disk add up."""

    path: Path
    total_bytes: int  # every file of the package
    weight_file_bytes: int  # weights/weight.bin
    blobs: tuple[StoredBlob, ...]

    @property
    def data_bytes(self) -> int:
        return sum(b.data_bytes for b in self.blobs)

    @property
    def blob_overhead_bytes(self) -> int:
        """weight.bin beyond the tensors' data: the file header, one 64-byte header per blob and alignment padding."""
        return self.weight_file_bytes - self.data_bytes

    @property
    def program_bytes(self) -> int:
        """The package's other files: the program description (model.mlmodel) and the manifest."""
        return self.total_bytes - self.weight_file_bytes

    def by_kind(self) -> dict[str, int]:
        kinds = dict.fromkeys(BREAKDOWN_KEYS, 0)
        for blob in self.blobs:
            kinds[blob.kind] += blob.data_bytes
        return kinds


def _weight_file(path: Path) -> Path:
    files = [p for p in mlpackage_weight_files(path) if p.name == MLPACKAGE_WEIGHT_FILE]
    if len(files) != 1:
        raise ValueError(f"{path} holds {len(files)} weight.bin files; expected one (an mlprogram .mlpackage).")
    return files[0]


def read_artifact(path: Path | str) -> ArtifactBytes:
    """Every blob of an .mlpackage's weight.bin with its kind (from the op that reads it) and size (from its header)."""
    from coremltools.models.utils import load_spec

    path = Path(path)
    spec = load_spec(str(path))
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path.name} is not an mlprogram; only mlprogram packages store a weight.bin.")
    weights = _weight_file(path)
    data = weights.read_bytes()
    found: dict[int, StoredBlob] = {}  # by offset: a blob two ops share counts once

    def add(offset: int, name: str, kind: str, consumer: str) -> None:
        size = weight_blob_data_bytes(data, offset)
        if size is None:
            raise ValueError(f"{weights.name}: no blob header at offset {offset} (for {name}); the file is damaged.")
        found.setdefault(offset, StoredBlob(name=name, kind=kind, consumer=consumer, data_bytes=int(size)))

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            consumers: dict[str, str] = {}
            for op in block.operations:
                for param, argument in op.inputs.items():
                    for binding in argument.arguments:
                        if binding.WhichOneof("binding") == "name":
                            consumers.setdefault(binding.name, f"{op.type}.{param}")
            for op in block.operations:
                # a LUT quantized per channel (per-channel scale) is itself a constexpr_blockwise_shift_scale
                feeds_lut = consumers.get(op.outputs[0].name, "").endswith("_lut_to_dense.lut") if op.outputs else False
                for param, argument in op.inputs.items():
                    for binding in argument.arguments:
                        if binding.WhichOneof("binding") == "value" and binding.value.WhichOneof("value") == "blobFileValue":
                            kind = ROLES.get((op.type, param), "uncompressed")
                            if feeds_lut and kind == "quantized_weights":
                                kind = "luts"
                            add(binding.value.blobFileValue.offset, f"{op.outputs[0].name}.{param}", kind, f"{op.type}.{param}")
            for op in block.operations:
                if op.type != "const" or "val" not in op.attributes:
                    continue
                value = op.attributes["val"]
                if value.WhichOneof("value") == "blobFileValue":
                    name = op.outputs[0].name
                    add(value.blobFileValue.offset, name, "uncompressed", consumers.get(name, "unused"))
    return ArtifactBytes(path=path, total_bytes=path_size_bytes(path), weight_file_bytes=len(data),
                         blobs=tuple(sorted(found.values(), key=lambda b: b.name)))


@dataclass
class BytesLesson:
    """The model compressed and exported, its theoretical breakdown and the artifact's own."""

    spec: AnySpec
    theory: SizeEstimate
    artifact: ArtifactBytes
    baseline_params: int  # float elements of the original model (fp16 size = 2 bytes each)
    compressed_layers: int
    layers: int
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """Per kind: theoretical bytes, the bytes the artifact stores, and their difference."""
        stored = self.artifact.by_kind()
        theory = self.theory.rounded_breakdown()
        return [
            {"kind": kind, "label": KIND_LABELS[kind], "theory_bytes": theory[kind], "artifact_bytes": stored[kind],
             "difference_bytes": stored[kind] - theory[kind]}
            for kind in BREAKDOWN_KEYS if theory[kind] or stored[kind]
        ]

    @property
    def fp16_bytes(self) -> int:
        return self.baseline_params * 2


def where_the_bytes_go(*, model: LoadedModel, spec: AnySpec, dataset: Dataset | None = None,
                       out_dir: Path | None = None, progress: Progress | None = None) -> BytesLesson:
    """Compress the whole model as `spec` says, export the .mlpackage and read it back."""
    progress = as_progress(progress)
    result = compress(model=model, spec=spec, dataset=dataset, progress=progress.sub(0.0, 0.45))
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="learn_bytes_"))
    path = export_coreml(module=result.module, input_shape=model.input_shape, path=folder / "model.mlpackage",
                         progress=progress.sub(0.45, 0.95))
    progress.update(0.97, "reading the package back")
    theory = theoretical_size(layers=result.layers, total_float_params=float_param_count(model.module))
    artifact = read_artifact(path)
    progress.update(1.0, f"{artifact.total_bytes / 1e6:.2f} MB on disk")
    return BytesLesson(spec=spec, theory=theory, artifact=artifact, baseline_params=float_param_count(model.module),
                       compressed_layers=sum(1 for layer in result.layers if layer.compressed),
                       layers=len(result.layers), notes=list(result.notes))


def where_the_bytes_go_by_reference(*, model_ref: dict, data_ref: dict, spec: dict, out_dir: str,
                                    progress: Progress | None = None) -> BytesLesson:
    """`where_the_bytes_go` for a worker (job kind learn_step, core.isolated): model and data named by reference, spec as a dict."""
    from core.jobs.refs import DataRef, ModelRef, load_data_ref, load_model_ref  # references: the job layer's own
    from core.specs import spec_from_dict

    model = load_model_ref(ref=ModelRef.from_dict(model_ref))
    dataset = load_data_ref(ref=DataRef.from_dict(data_ref), model=model)
    return where_the_bytes_go(model=model, spec=spec_from_dict(spec), dataset=dataset, out_dir=Path(out_dir),
                              progress=progress)
