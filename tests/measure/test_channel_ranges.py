"""Per-channel weight-range spread of conv layers, with BatchNorm folded in as int8 kernels store the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.measure.channel_ranges import channel_range_table, int8_weight_snr_db, spread_by_kind, with_int8_snr


def _depthwise_net(channel_gain: list[float]) -> nn.Module:
    """A depthwise conv whose kernels are all ones, then a BatchNorm that scales channel c by channel_gain[c]."""
    n = len(channel_gain)
    net = nn.Sequential(nn.Conv2d(n, n, 3, padding=1, groups=n, bias=False), nn.BatchNorm2d(n), nn.ReLU6(),
                        nn.Conv2d(n, 4, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].weight.copy_(torch.tensor(channel_gain))
        net[1].running_var.fill_(1.0 - net[1].eps)  # so the folded scale is exactly gamma
    return net.eval()


def test_spread_and_levels_come_from_the_folded_weights():
    table = channel_range_table(module=_depthwise_net([8.0, 1.0, 1.0, 0.5]))
    depthwise = table.set_index("layer").loc["0"]
    assert depthwise["kind"] == "depthwise" and depthwise["batchnorm_folded"]
    assert depthwise["spread"] == pytest.approx(8.0)  # widest 8 ÷ median 1
    assert depthwise["median_levels"] == pytest.approx(127 / 8)
    assert depthwise["smallest_levels"] == pytest.approx(127 / 16)
    unfolded = channel_range_table(module=_depthwise_net([8.0, 1.0, 1.0, 0.5]), fold_batchnorm=False)
    assert unfolded.set_index("layer").loc["0", "spread"] == pytest.approx(1.0)  # the raw kernels are all ones
    assert table.set_index("layer").loc["3", "kind"] == "pointwise"


def test_per_tensor_int8_loses_snr_where_ranges_spread():
    net = _depthwise_net([50.0, 1.0, 0.9, 1.1])
    table = with_int8_snr(module=net, table=channel_range_table(module=net)).set_index("layer")
    assert table.loc["0", "snr_per_channel_db"] - table.loc["0", "snr_per_tensor_db"] > 3.0
    same = torch.randn(16, 8)
    assert int8_weight_snr_db(same, per_channel=True) >= int8_weight_snr_db(same, per_channel=False)
    assert int8_weight_snr_db(torch.ones(4, 4), per_channel=False) == float("inf")  # exactly representable


def test_spread_by_kind_summarises_each_kind():
    summary = spread_by_kind(channel_range_table(module=_depthwise_net([4.0, 1.0, 1.0]))).set_index("kind")
    assert summary.loc["depthwise", "layers"] == 1 and summary.loc["pointwise", "layers"] == 1
    assert summary.loc["depthwise", "spread"] == pytest.approx(4.0)
