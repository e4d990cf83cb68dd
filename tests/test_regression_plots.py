"""The dimensional plots of issue 25 (`classifiers.results.plots`): the CCC layer curve per dimension with its
speaker CI band, predicted against true per dimension (scatter, or a hexbin density for many
points) titled with its CCC, and the cross-corpus CCC matrix drawn by the UAR matrix's code."""

from __future__ import annotations

import re

import numpy as np
import pytest

import classifiers.results.plots as plots
from classifiers.estimators.regression import ccc, ccc_by_layer
from classifiers.results.plots import ccc_transfer_heatmap, dimension_layer_curve, prediction_scatter
from featstore.errors import SerError

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    data = open(path, "rb").read()
    return len(data) > 1000 and data.startswith(PNG)


def curves_from(y, P, g, names, layers):
    out = ccc_by_layer(y, P, g)
    return {n: [(layer, out["ccc"][li, t], out["low"][li, t], out["high"][li, t]) for li, layer in enumerate(layers)]
            for t, n in enumerate(names)}


def layer_data(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((120, 3))
    g = np.repeat(np.arange(12), 10)
    strength = np.array([[0.1, 0.5, 1.5, 3.0, 1.0], [0.0, 0.2, 0.6, 1.0, 2.5], [0.3, 0.3, 0.3, 0.3, 0.3]]).T
    P = np.stack([y * s + rng.standard_normal((120, 3)) for s in strength])    # (5 layers, 120, 3)
    return y, P, g


def test_layer_curve_has_one_line_per_dimension_with_its_band_and_best_layer(tmp_path, kept):
    y, P, g = layer_data()
    names, layers = ["arousal", "valence", "dominance"], [0, 3, 6, 9, 12]
    curves = curves_from(y, P, g, names, layers)
    path = dimension_layer_curve(curves, tmp_path / "layers.png", title="synthetic: CCC by layer")
    assert path == tmp_path / "layers.png" and is_png(path)
    (fig,) = kept
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 3 and [s.split(" ")[0] for s in legend] == names        # one line per dimension
    value = ccc_by_layer(y, P, g)["ccc"]
    for t, text in enumerate(legend):
        best = int(np.argmax(value[:, t]))
        assert f"best {value[best, t]:.3f}, layer {layers[best]}" in text
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(layers)]
    assert len(lines) == 3
    for t, line in enumerate(lines):
        np.testing.assert_allclose(line.get_ydata(), value[:, t])
    assert len(ax.collections) == 3                                                 # a CI band per dimension
    assert ax.title.get_text() == "synthetic: CCC by layer"


def test_layer_curve_without_intervals_and_below_zero(tmp_path, kept):
    curves = {"valence": [(0, -0.3), (1, 0.1), (2, 0.4)], "arousal": [(0, 0.2, None, None), (1, 0.5, None, None)]}
    assert is_png(dimension_layer_curve(curves, tmp_path / "c.png"))
    (fig,) = kept
    ax = fig.axes[0]
    assert not ax.collections                                                       # no band without a CI
    assert ax.get_ylim()[0] < -0.3 and ax.get_ylim()[1] == 1
    assert "band" not in ax.get_ylabel()
    with pytest.raises(SerError, match="no dimensions"):
        dimension_layer_curve({}, tmp_path / "d.png")


@pytest.mark.parametrize("n,dense", [(300, False), (3000, True)])
def test_scatter_titles_carry_the_ccc_of_the_data(tmp_path, kept, n, dense):
    rng = np.random.default_rng(n)
    y = rng.standard_normal((n, 3))
    p = y * [0.9, 0.5, 0.1] + rng.standard_normal((n, 3)) * 0.6 + [0.0, 0.3, -0.2]
    path = prediction_scatter(y, p, tmp_path / "scatter.png", title="ridge, layer 8")
    assert is_png(path)
    (fig,) = kept
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3
    want = ccc(y, p)
    for t, (ax, name) in enumerate(zip(panels, ["arousal", "valence", "dominance"])):
        m = re.fullmatch(rf"{name}: CCC (-?\d\.\d{{3}}) \(n={n}\)", ax.get_title())
        assert m, ax.get_title()
        assert float(m.group(1)) == pytest.approx(want[t], abs=5e-4)
        identity = [ln for ln in ax.get_lines() if ln.get_label() == "identity"]
        assert len(identity) == 1
        x0, x1 = identity[0].get_xdata()
        np.testing.assert_allclose(identity[0].get_ydata(), [x0, x1])           # y = x
        assert x0 <= min(y[:, t].min(), p[:, t].min()) and x1 >= max(y[:, t].max(), p[:, t].max())
        kinds = {type(c).__name__ for c in ax.collections}
        assert kinds == ({"PolyCollection"} if dense else {"PathCollection"})   # hexbin above the threshold
    assert len(fig.axes) == (6 if dense else 3)                                     # a colour bar per density
    assert fig._suptitle.get_text() == "ridge, layer 8"


def test_scatter_one_dimension_and_errors(tmp_path, kept):
    rng = np.random.default_rng(0)
    y = rng.standard_normal(50)
    p = y + rng.standard_normal(50)
    assert is_png(prediction_scatter(y, p, tmp_path / "one.png", names=["valence"]))
    (fig,) = kept
    assert fig.axes[0].get_title() == f"valence: CCC {ccc(y, p):.3f} (n=50)"
    with pytest.raises(SerError, match="2 dimension names for 1 columns"):
        prediction_scatter(y, p, tmp_path / "x.png", names=["a", "b"])
    with pytest.raises(SerError, match="same shape"):
        prediction_scatter(y, p[:-1], tmp_path / "x.png")


def test_ccc_matrix_is_drawn_by_the_transfer_heatmap(tmp_path, kept, monkeypatch):
    corpora = ["iemocap", "msppodcast", "csv"]
    M = np.array([[0.62, 0.21, -0.15], [0.33, 0.71, np.nan], [0.1, 0.05, 0.5]])
    calls = []
    real = plots.transfer_heatmap

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(plots, "transfer_heatmap", spy)
    path = ccc_transfer_heatmap(M, corpora, tmp_path / "ccc_matrix.png", dimension="valence")
    assert is_png(path) and len(calls) == 1                                         # the UAR matrix's code
    assert calls[0]["metric"] == "CCC valence" and calls[0]["vmin"] == pytest.approx(-0.2) and calls[0]["vmax"] == 1
    (fig,) = kept
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.62", "0.21", "-0.15", "0.33", "0.71", "—", "0.10", "0.05", "0.50"]
    assert ax.images[0].get_clim() == pytest.approx((-0.2, 1.0))
    assert "CCC valence" in ax.title.get_text()
    # all CCCs at or above 0: the UAR matrix's colour range
    calls.clear()
    ccc_transfer_heatmap(np.abs(np.nan_to_num(M)), corpora, tmp_path / "pos.png")
    assert calls[0]["vmin"] == 0.0 and calls[0]["metric"] == "CCC"
