"""The lessons' computed sentences: they state the numbers they are given, and only what those numbers show."""

from __future__ import annotations

from core.learn.findings import levels_finding, palette_finding
from core.learn.quantization import LinearSetting


def test_levels_follow_the_grid_mode() -> None:
    symmetric = levels_finding(LinearSetting(bits=4, symmetric=True))
    assert "2⁴ = 16 codes" in symmetric and "uses 15 of them (−7 … 7)" in symmetric and "leaves out −8" in symmetric
    asymmetric = levels_finding(LinearSetting(bits=4, symmetric=False))
    assert "uses all 16 (-8 … 7)" in asymmetric
    assert "lie beyond" not in symmetric
    assert "1 of the 255 levels lies beyond" in levels_finding(LinearSetting(bits=8), beyond=1)


def test_palette_words_follow_the_measured_snr() -> None:
    wins = palette_finding(n_bits=4, snr_db=18.8, linear_snr_db=8.2, single_lut_snr_db=None, groups=1)
    assert "wins by 10.6 dB" in wins and "LUTs instead of one" not in wins
    small = palette_finding(n_bits=2, snr_db=9.3, linear_snr_db=0.5, single_lut_snr_db=9.25, groups=64)
    assert "64 LUTs instead of one change the SNR by only +0.1 dB" in small and "share one shape" in small
    large = palette_finding(n_bits=2, snr_db=12.0, linear_snr_db=0.5, single_lut_snr_db=9.0, groups=2)
    assert "by +3.0 dB: the channel groups differ" in large
    even = palette_finding(n_bits=8, snr_db=40.0, linear_snr_db=40.2, single_lut_snr_db=None, groups=1)
    assert "about as good" in even
