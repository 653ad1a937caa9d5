"""Measurement: quality (accuracy, agreement, output SNR), size (artifact vs theoretical), latency, memory.

Every function here is UI-free and keyword-only; `core.experiment` strings them together into one record.
"""

from core.measure.latency import LatencySettings, measure_interleaved
from core.measure.machine import describe_machine
from core.measure.memory import peak_inference_memory_bytes
from core.measure.quality import (
    Evaluation,
    collect_logits,
    flipped_images,
    output_psnr_db,
    output_snr_db,
    per_class_accuracy,
    top1_agreement,
    topk_accuracy,
)
from core.measure.size import path_size_bytes, size_check, theoretical_size

__all__ = [
    "Evaluation",
    "LatencySettings",
    "collect_logits",
    "describe_machine",
    "flipped_images",
    "measure_interleaved",
    "output_psnr_db",
    "output_snr_db",
    "path_size_bytes",
    "peak_inference_memory_bytes",
    "per_class_accuracy",
    "size_check",
    "theoretical_size",
    "top1_agreement",
    "topk_accuracy",
]
