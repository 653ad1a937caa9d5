"""The lessons' words: a title, a short explanation (≤ 150 words) and a "try this" prompt each."""

from __future__ import annotations

from dataclasses import dataclass

MAX_WORDS = 150


@dataclass(frozen=True)
class Lesson:
    key: str
    title: str
    text: str
    try_this: str

    @property
    def words(self) -> int:
        return len(self.text.split())


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        key="scale",
        title="1 · Scale and zero-point",
        text=(
            "Linear quantization stores each weight as a small integer q and rebuilds it as "
            "(q − zero-point) × scale. The scale is the range divided by the number of integer steps: "
            "n bits give 2ⁿ integer codes (a symmetric grid uses 2ⁿ − 1: see below the chart), so every bit about halves the step. **Symmetric** grids are centred on "
            "zero (zero-point 0); **asymmetric** grids shift by a zero-point to cover a lopsided range. "
            "Two errors compete. Inside the range each weight is *rounded* to the nearest level (error at most "
            "half a step). Outside it weights are *clipped* to the end level. The range usually comes from the "
            "weights' min and max, so one large weight stretches every step; clipping at a percentile "
            "narrows the steps and sacrifices the tails. SNR compares the weights' energy with the error's: "
            "every extra bit adds about 6 dB."
        ),
        try_this=(
            "Set 8 bits and note the SNR, then go to 4 and 2 bits. Now, at 4 bits, switch to a 99.9 % clip: "
            "rounding error drops, clipping error appears — which wins?"
        ),
    ),
    Lesson(
        key="granularity",
        title="2 · Granularity: how many scales",
        text=(
            "One scale for the whole tensor (**per tensor**) must cover the largest weight of every channel. "
            "Output channels often differ in range by ten times or more, so the small channels get only a few "
            "of the levels and lose most of their precision. **Per channel** gives every output channel its own "
            "scale; **per block** goes further and gives each block of consecutive input channels its own. "
            "More scales follow the weights more closely, but each one is stored too (16 bits, plus an 8-bit "
            "zero-point when asymmetric): cheap next to a 512×512 kernel, noticeable at 4 bits with small "
            "blocks. The bars show every channel's scale; the lines show each channel's SNR under the three "
            "choices."
        ),
        try_this=(
            "Turn on the outlier channel: the per-tensor scale jumps and every other channel's SNR falls, "
            "while per-channel SNR barely moves. Then shrink the block size and watch the scale cost."
        ),
    ),
    Lesson(
        key="palettize",
        title="3 · Palettization: a look-up table",
        text=(
            "Instead of an evenly spaced grid, palettization learns 2ⁿ values — a look-up table (LUT) — with "
            "k-means, so levels crowd where the weights crowd. Each weight stores only its n-bit index; the "
            "model rebuilds it as LUT[index]. The LUT costs 2ⁿ × 16 bits, nothing for a large layer, but "
            "many LUTs add up: **grouped** LUTs give each group of output channels its own table. A "
            "**per-channel scale** first divides every channel by its largest magnitude, so one LUT fits "
            "channels of different ranges. **Vector** palettization (cluster_dim 2) clusters pairs of weights: one "
            "n-bit index selects two values, halving the index bits per weight. Bits per weight below include "
            "indices, LUTs and scales."
        ),
        try_this=(
            "At 4 bits, compare the LUT with lesson 1's linear grid at 4 bits (the line below the charts does). "
            "Go to 2 bits: what does each bit removed cost? Then give each group of 4 channels its own LUT, on "
            "this layer and on the hand-made tensor: where do separate tables help?"
        ),
    ),
    Lesson(
        key="prune",
        title="4 · Pruning and sparsity",
        text=(
            "Magnitude pruning sets the smallest weights to zero: every weight between −t and +t goes, and "
            "t rises with the target sparsity. **Unstructured** pruning may zero any weight and keeps the "
            "most signal. **Block** pruning zeroes groups of consecutive output channels together (ranked by "
            "their joint magnitude) and **n:m** zeroes n of every m consecutive input channels — patterns "
            "hardware can skip, at some cost in SNR. Storage: a sparse weight keeps a 1-bit mask for every "
            "position plus the surviving values in fp16, so pruning saves bytes only beyond about 6 % "
            "sparsity and halves the size only at about 56 %. The curve shows how quickly SNR falls as sparsity rises."
        ),
        try_this=(
            "Move sparsity from 50 % to 90 % and watch the threshold climb into the histogram's shoulders. "
            "Then compare 2:4 with unstructured 50 % — same zeros, different SNR."
        ),
    ),
    Lesson(
        key="activations",
        title="5 · Activations and calibration",
        text=(
            "Weights are known in advance; activations — the numbers flowing between layers — depend on the "
            "image. To run a layer in 8-bit integers (**W8A8**) its input needs a fixed scale too, so the model "
            "first sees N **calibration images** while an **observer** records the input's range. **Min/max** "
            "keeps the extremes: one bright pixel stretches the grid for every image. A **moving average** of the "
            "batch extremes (coremltools' default) and a **histogram** observer, which picks the range with the "
            "least rounding plus clipping error, ignore rare peaks. Too few images may under-estimate the range, "
            "so later inputs beyond it are clipped — whether they do depends on the layer: the line below says. The error is measured on held-out images at the layer's "
            "output, with int8 weights, int8 inputs and both."
        ),
        try_this=(
            "Start at 8 images with min/max and read the held-out clipping, then move N up: does the range line "
            "settle, or keep growing? Switch to the histogram observer: the range shrinks — does the output SNR "
            "rise or fall?"
        ),
    ),
    Lesson(
        key="finetune",
        title="6 · Fake quantization and fine-tuning",
        text=(
            "At 2 bits rounding changes the weights so much that accuracy collapses. Fine-tuning repairs it: "
            "the model trains while its forward pass uses **fake-quantized** weights — rounded to the grid, "
            "then scaled back to floats — so the loss sees exactly the error the compressed model will make. "
            "Rounding has no useful gradient (it is flat almost everywhere), so the backward pass pretends it "
            "was the identity: the **straight-through estimator** passes the gradient on unchanged inside the "
            "grid and blocks it where a weight was clamped. The float weights drift until their rounded copies "
            "classify well. The run below does this for a few dozen steps on the sample model."
        ),
        try_this=(
            "Run 2 bits and see how much of the lost accuracy returns. Then try 4 bits: is there anything left "
            "to recover? Compare the loss curve with the float model's dashed line."
        ),
    ),
    Lesson(
        key="bytes",
        title="7 · Where the bytes go",
        text=(
            "A compressed .mlpackage is a program plus one file of tensors, **weight.bin**. Every compressed "
            "weight becomes parts: palettized weights store **indices** and **LUTs**, quantized ones "
            "**integers**, **scales** and maybe **zero-points**, pruned ones a **bitmask** and the "
            "**non-zero values**; small layers, biases and BatchNorm stay **fp16**. Each tensor in weight.bin "
            "has a 64-byte header and is aligned to 64 bytes, and the program itself takes a few kilobytes. "
            "Below, the whole model is compressed and exported as on the Compress page, the package is read "
            "back blob by blob, and each kind of bytes is set next to the product's size model."
        ),
        try_this=(
            "Export at 4-bit palettization, then prune 75 %: which part dominates now? On a small model, "
            "how much of the file is container overhead?"
        ),
    ),
)


def lesson(key: str) -> Lesson:
    for item in LESSONS:
        if item.key == key:
            return item
    raise ValueError(f"unknown lesson {key!r}; choose one of {', '.join(item.key for item in LESSONS)}.")
