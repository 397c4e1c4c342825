"""``thinkingearth.data`` exports the readers by name, without importing them up front."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

READERS = ("KuroSiwo", "BigEarthNet", "Sen1Floods11", "EuroSATMS", "CopernicusBench")


def test_readers_are_exported_from_their_format_modules() -> None:
    import thinkingearth.data as data
    from thinkingearth.data import (  # the names the issue promised
        BigEarthNet,
        CopernicusBench,
        EuroSATMS,
        KuroSiwo,
        Sen1Floods11,
        SyntheticCopernicus,
    )
    from thinkingearth.data.formats import (
        bigearthnet,
        copernicusbench,
        eurosat,
        kurosiwo,
        sen1floods11,
    )
    from thinkingearth.data.synthetic import SyntheticCopernicus as home

    assert KuroSiwo is kurosiwo.KuroSiwo and BigEarthNet is bigearthnet.BigEarthNet
    assert Sen1Floods11 is sen1floods11.Sen1Floods11 and EuroSATMS is eurosat.EuroSATMS
    assert CopernicusBench is copernicusbench.CopernicusBench and SyntheticCopernicus is home
    assert set(READERS) <= set(data.__all__) and set(READERS) <= set(dir(data))
    with pytest.raises(AttributeError, match="has no attribute 'EuroSAT'"):
        data.EuroSAT  # noqa: B018


def test_importing_the_package_imports_no_reader() -> None:
    heavy = (
        "torchgeo",
        "h5py",
        "rasterio",
        "thinkingearth.data.formats",
        "thinkingearth.data.synthetic",
    )
    code = (
        "import json, sys; import thinkingearth.data; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({heavy!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(done.stdout)
    assert loaded == [], loaded
    # ... and the reader modules do load on first use.
    code = (
        "import sys; from thinkingearth.data import KuroSiwo; "
        "print('thinkingearth.data.formats.kurosiwo' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "True"
