"""Per-point outcome masks: stored compactly, read back exactly, and refused when damaged."""

from __future__ import annotations

import pytest
import torch

from approp.outcomes import OutcomesError, decode, encode


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])
def test_masks_round_trip(n):
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.6
    raw = encode(mask)
    assert raw["n"] == n and raw["k"] == int(mask.sum()) and len(raw["bits"]) == 2 * ((n + 7) // 8)
    assert torch.equal(decode(raw), mask)


def test_the_first_point_is_the_highest_bit():
    assert encode(torch.tensor([True] + [False] * 7 + [True]))["bits"] == "8080"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"n": 9, "k": 1, "bits": "8080"}, "counts 2 points, its k says 1"),
        ({"n": 8, "k": 1, "bits": "8080"}, "needs 1 bytes"),
        ({"n": 9, "k": 2, "bits": "80ff"}, "past its n points"),
        ({"n": 9, "k": 2, "bits": "zz80"}, "not hexadecimal"),
        ({"n": "9", "k": 2, "bits": "8080"}, "must be integers"),
        ([1, 0, 1], "is {'n', 'k', 'bits'}"),
    ],
)
def test_damaged_masks_are_refused(raw, message):
    assert decode({"n": 9, "k": 2, "bits": "8080"}).tolist() == [True] + [False] * 7 + [True]  # intact
    with pytest.raises(OutcomesError, match=message):
        decode(raw)


def test_only_one_mask_per_point_is_encoded():
    with pytest.raises(ValueError, match=r"\(n,\)"):
        encode(torch.zeros(2, 3, dtype=torch.bool))
