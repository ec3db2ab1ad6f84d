"""The smdebug trace format: record CRCs and tensor reductions match their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from dogbreed.debugging.trace import TraceWriter, crc32c, reduce, reduction_name


def test_crc_and_reductions_match_their_definitions():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert float(reduce(array, "l1")) == 15.0  # of the flattened tensor, as smdebug's hooks
    assert float(reduce(array, "l2")) == pytest.approx(np.sqrt(55))
    assert reduction_name("fc.weight", "l2") == "smdebug/reductions/l2/fc.weight"
    with pytest.raises(ValueError, match="garbles"):
        TraceWriter("/tmp/a__b")
