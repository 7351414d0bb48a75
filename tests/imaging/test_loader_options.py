"""LoaderOptions (issue 21.6): the (batch_size, num_workers, cache_dir, on_bad_image) bundle, checked once."""

from __future__ import annotations

import pytest

from chestxr.core import ConfigError, load_config
from chestxr.imaging import IN_PROCESS, LoaderOptions


def test_checked_where_made_and_taken_from_a_config():
    assert LoaderOptions() == LoaderOptions(32, 2, None, "error") and IN_PROCESS.num_workers == 0
    for bad, word in ((dict(on_bad_image="ignore"), "on_bad_image"), (dict(batch_size=0), "batch_size"),
                      (dict(num_workers=-1), "num_workers"), (dict(batch_size=True), "batch_size")):  # fmt: skip
        with pytest.raises(ConfigError, match=word):
            LoaderOptions(**bad)
    cfg = load_config(None, ["train.batch_size=8", "data.num_workers=0", "data.on_bad_image=skip"])
    assert LoaderOptions.from_config(cfg) == LoaderOptions(8, 0, None, "skip")
