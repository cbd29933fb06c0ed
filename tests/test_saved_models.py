"""Saved models are verified on load; broken or edited files get a clear error; no code runs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from clvbayes import compat
from clvbayes.errors import ModelError
from clvbayes.models import BetaGeoModel, GammaGammaModel


@pytest.fixture
def saved(bgnbd_mle, tmp_path):
    path = tmp_path / "bg.nc"
    bgnbd_mle.save(path)
    return path


def _edit(path, tmp_path, change):
    groups, attrs = compat.read_groups(path)
    change(groups, attrs)
    out = tmp_path / "edited.nc"
    compat.write_groups(out, groups, attrs)
    return out


def test_edited_parameter_is_refused(saved, tmp_path):
    def times_ten(groups, attrs):
        groups["posterior"]["b"] = groups["posterior"]["b"] * 10

    with pytest.raises(ModelError, match="modified after clvbayes saved it"):
        BetaGeoModel.load(_edit(saved, tmp_path, times_ten))


def test_edited_customer_id_dtype_is_refused(saved, tmp_path):
    def to_int(groups, attrs):
        groups["constant_data"].attrs["customer_id_dtype"] = "int64"

    with pytest.raises(ModelError, match="modified after clvbayes saved it"):
        BetaGeoModel.load(_edit(saved, tmp_path, to_int))


def test_negative_counts_are_refused_even_with_a_matching_hash(saved, tmp_path):
    """A hand-made file whose hash was recomputed is still checked for consistency."""
    from clvbayes.models.base import _content_hash

    def negative(groups, attrs):
        c = groups["constant_data"]["counts"].values.copy()
        c[0] = -c[0]
        groups["constant_data"]["counts"] = ("history", c)
        attrs.pop("clvbayes_sha256")
        attrs["clvbayes_sha256"] = _content_hash(groups, attrs)

    with pytest.raises(ModelError, match="not non-negative whole numbers"):
        BetaGeoModel.load(_edit(saved, tmp_path, negative))


@pytest.mark.parametrize(
    "content", [b"", b"not a netCDF file at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 100]
)
def test_broken_files_get_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.nc"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="is not a readable clvbayes model file"):
        BetaGeoModel.load(path)


def test_missing_file_and_wrong_class(saved, tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        BetaGeoModel.load(tmp_path / "nope.nc")
    with pytest.raises(ModelError, match="holds a BetaGeoModel, not a GammaGammaModel"):
        GammaGammaModel.load(saved)


def test_garbage_settings_get_a_clear_error(saved, tmp_path):
    from clvbayes.models.base import _content_hash

    def garbage(groups, attrs):
        attrs["priors"] = "{not json"
        attrs.pop("clvbayes_sha256")
        attrs["clvbayes_sha256"] = _content_hash(groups, attrs)

    with pytest.raises(ModelError, match="not a valid clvbayes model file"):
        BetaGeoModel.load(_edit(saved, tmp_path, garbage))


def test_loading_never_executes_code(saved, tmp_path, monkeypatch):
    """No unpickling, and a class name in the file is only looked up among clvbayes models."""
    from clvbayes.models.base import _content_hash

    def boom(*a, **k):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    BetaGeoModel.load(saved)  # fine without pickle

    def hostile(groups, attrs):
        attrs["model_class"] = "__import__('os').system('touch PWNED')"
        attrs.pop("clvbayes_sha256")
        attrs["clvbayes_sha256"] = _content_hash(groups, attrs)

    with pytest.raises(ModelError, match="unknown model class"):
        BetaGeoModel.load(_edit(saved, tmp_path, hostile))
    assert not (tmp_path / "PWNED").exists()


def test_save_is_atomic_when_the_disk_is_full(bgnbd_mle, saved, monkeypatch):
    """A failed write leaves the previous file as it was, and no temporary file behind."""
    import errno

    before = saved.read_bytes()

    import builtins

    real_open = builtins.open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return FullDisk(f) if "w" in mode and ".tmp-" in str(file) else f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(OSError, match="No space left"):
        bgnbd_mle.save(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_leading_zero_ids_survive(tmp_path):
    import pandas as pd

    rfm = pd.DataFrame(
        {"frequency": [1, 0, 2], "recency": [3.0, 0.0, 5.0], "T": [6.0, 7.0, 8.0]},
        index=pd.Index(["00004", "0007", "12"], name="customer_id"),
    )
    rfm.attrs["time_unit"] = "weeks"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = BetaGeoModel().fit(rfm, method="map")
    m.save(tmp_path / "m.nc")
    loaded = BetaGeoModel.load(tmp_path / "m.nc")
    assert list(loaded.data_.customer_ids) == ["00004", "0007", "12"]
    np.testing.assert_array_equal(loaded.p_alive().values, m.p_alive().values)
