"""What a lesson's chart shows, in words computed from the same numbers: a lesson never claims what its chart
contradicts (a symmetric 4-bit grid has 15 levels, not 16; a range that keeps growing is not called settled; a
calibration that clips nothing is not said to clip)."""

from __future__ import annotations

from dataclasses import dataclass

from core.formatting import fmt_pct
from core.learn.activations import ActivationStudy, ObservedRange
from core.learn.quantization import LinearSetting

SETTLED_CHANGE = 0.05  # the top of the range "has settled" once no later N moves it by more than 5 %
SMALL_DB = 0.5  # SNR differences below this are "little" (a few tenths of a dB)

SHORT_NAMES = {"moving_average": "moving average", "min_max": "min/max", "histogram": "histogram"}
_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power(bits: int) -> str:
    return "2" + str(bits).translate(_SUPERSCRIPTS)


# --------------------------------------------------------------------------- lesson 1: the levels of a grid


def levels_finding(setting: LinearSetting, *, beyond: int = 0) -> str:
    """How many levels the chart's grid has, why a symmetric grid has one fewer than 2ⁿ, and how many of them lie
    beyond the weights (``beyond``: levels outside the weights' min … max)."""
    low, high = setting.quant_range
    levels = high - low + 1
    codes = 2**setting.bits
    if setting.symmetric:
        text = (
            f"{setting.bits} bits give {_power(setting.bits)} = {codes} codes; this symmetric grid uses "
            f"{levels} of them (−{high} … {high}): it leaves out −{codes // 2} so that every level has its mirror "
            "image and zero sits in the middle (coremltools' restricted range)."
        )
    else:
        text = (
            f"{setting.bits} bits give {_power(setting.bits)} = {codes} codes, and this asymmetric grid uses all "
            f"{levels} ({low} … {high}), shifted by the zero-point."
        )
    if beyond:
        text += (f" {beyond} of the {levels} levels {'lies' if beyond == 1 else 'lie'} beyond the smallest or "
                 "largest weight: no weight rounds to " + ("it." if beyond == 1 else "them."))
    return text


# --------------------------------------------------------------------------- lesson 5: calibration


@dataclass(frozen=True)
class Settling:
    """How the top of one observer's range moves as N grows."""

    counts: tuple[int, ...]
    highs: tuple[float, ...]
    settled_at: int | None  # the first N after which no step moves the top by more than SETTLED_CHANGE; None: never

    @property
    def growth(self) -> float:
        """Relative change of the top of the range from the smallest to the largest N."""
        first = self.highs[0]
        return (self.highs[-1] - first) / abs(first) if first else 0.0


def settling(study: ActivationStudy, observer: str) -> Settling:
    highs = tuple(float(r.high) for r in study.ranges[observer])
    counts = tuple(study.counts)
    settled_at = None
    for start in range(len(highs) - 1):
        steps = [abs(b - a) / abs(a) if a else 0.0 for a, b in zip(highs[start:-1], highs[start + 1 :], strict=True)]
        if max(steps) <= SETTLED_CHANGE:
            settled_at = counts[start]
            break
    return Settling(counts=counts, highs=highs, settled_at=settled_at)


def settling_title(study: ActivationStudy, observer: str) -> str:
    """The settling chart's title: what the chosen observer's line does, not what it is expected to do."""
    found = settling(study, observer)
    name = SHORT_NAMES.get(observer, observer)
    if found.settled_at is None:
        return f"Top of the range vs N · {name}: still moving at N = {found.counts[-1]}"
    if found.settled_at == found.counts[0]:
        return f"Top of the range vs N · {name}: hardly moves from N = {found.counts[0]}"
    return f"Top of the range vs N · {name}: settles from N = {found.settled_at}"


def outside_count(study: ActivationStudy, observed: ObservedRange) -> tuple[int, int]:
    """How many held-out input values lie outside an observed range (they are clipped to its ends), of how many."""
    values = study.eval_inputs
    return int(((values < observed.low) | (values > observed.high)).sum()), int(values.numel())


def _clipped_words(study: ActivationStudy, observed: ObservedRange) -> str:
    outside, total = outside_count(study, observed)
    return f"{_pct(outside / total)} ({outside:,} of {total:,})"


def _pct(fraction: float) -> str:
    return fmt_pct(fraction)  # as the lesson's "Held-out clipped" number is written


def calibration_finding(study: ActivationStudy, observer: str, images: int) -> str:
    """What happens on this layer at this N: clipping of held-out values, and whether the range has settled."""
    found = settling(study, observer)
    observed = study.range_at(observer, images)
    first, last = found.counts[0], found.counts[-1]
    if outside_count(study, observed)[0] == 0:
        clip_text = (f"At N = {images}, {_clipped_words(study, observed)} held-out values fall outside the range: on "
                     "this layer the range is already wide enough.")
    else:
        clip_text = (f"At N = {images}, {_clipped_words(study, observed)} held-out values fall outside the range "
                     "and are clipped.")
        if images != last:
            clip_text += f" At N = {last}: {_clipped_words(study, study.range_at(observer, last))}."
    move = found.growth
    moved = f"{move * 100:+.0f} %".replace("-", "−")
    if abs(move) <= SETTLED_CHANGE:
        range_text = f"The top of the range moves by {moved} from N = {first} to {last}: it barely depends on N here."
    elif found.settled_at is None:
        range_text = (f"The top of the range moves by {moved} from N = {first} to {last} and is still moving "
                      f"at N = {last}: rarer, larger inputs keep turning up.")
    else:
        range_text = f"The top of the range moves by {moved} from N = {first} to {last}, and settles from N = {found.settled_at}."
    return f"{clip_text} {range_text}"


# --------------------------------------------------------------------------- lesson 3: palettization


def palette_finding(*, n_bits: int, snr_db: float, linear_snr_db: float, single_lut_snr_db: float | None,
                    groups: int) -> str:
    """The LUT against the linear grid of lesson 1 at the same bits, and grouped LUTs against one LUT."""
    gain = snr_db - linear_snr_db
    text = (f"At {n_bits} bits this LUT reaches {snr_db:.1f} dB, the linear per-tensor grid of lesson 1 at "
            f"{n_bits} bits {linear_snr_db:.1f} dB: " + (
                f"k-means puts the levels where the weights are and wins by {gain:.1f} dB." if gain >= SMALL_DB
                else "here the even grid is about as good." if gain > -SMALL_DB
                else f"here the even grid is {-gain:.1f} dB better."))
    if single_lut_snr_db is not None:
        change = snr_db - single_lut_snr_db
        if abs(change) < SMALL_DB:
            text += (f" {groups} LUTs instead of one change the SNR by only {change:+.1f} dB: this layer's output "
                     "channels share one shape of weight distribution, so one table already fits them all; grouped "
                     "LUTs pay off when channels differ (try the hand-made tensor).")
        else:
            text += f" {groups} LUTs instead of one change the SNR by {change:+.1f} dB: the channel groups differ."
    return text

