"""The loop's panels: a topomap with head outline, sensors and a diverging map; readable image panels."""
import mne
import numpy as np
import pytest
from matplotlib.figure import Figure

from prosthesis_sim.data.dataset import make_info
from prosthesis_sim.data.things_meg import make_meg_info, things_meg_channels
from prosthesis_sim.render import (FOOTER_H, TITLE_H, PanelRenderer, Topomap, fit_image, interpolation_matrix,
                                   mne_topomap_geometry)

EEG_63 = ("Fp1 Fp2 AF7 AF3 AFz AF4 AF8 F7 F5 F3 F1 F2 F4 F6 F8 FT9 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 FT8 FT10 T7 C5 "
          "C3 C1 Cz C2 C4 C6 T8 TP9 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 TP10 P7 P5 P3 P1 Pz P2 P4 P6 P8 PO7 PO3 POz "
          "PO4 PO8 O1 Oz O2").split()
SIZE = 240


@pytest.fixture(scope="module", params=["eeg", "meg"])
def info(request):
    if request.param == "eeg":
        return make_info(EEG_63, 250.0)  # THINGS-EEG2's 63 channels, 10-05 positions
    return make_meg_info(things_meg_channels(), 200.0)  # 271 CTF magnetometers


@pytest.fixture(scope="module")
def topomap(info):
    return Topomap(info, SIZE)


def bgr_at(img, xy):
    x, y = np.round(xy).astype(int)
    return img[y, x].astype(int)


def median_bgr_near(img, xy, half=6):
    """Median colour of a small patch (robust to the sensor dots drawn over the map)."""
    x, y = np.round(xy).astype(int)
    return np.median(img[y - half : y + half + 1, x - half : x + half + 1].reshape(-1, 3), axis=0)


def test_topomap_draws_head_outline_and_sensors(topomap):
    img = topomap.render(np.zeros(len(topomap.sensor_px)), vmax=1.0)  # an all-zero map is white
    head = topomap.outline_px[0]  # MNE's head circle, then nose and ears
    assert len(topomap.outline_px) == 4
    on_outline = np.array([bgr_at(img, p).max() for p in head[:: max(1, len(head) // 24)]])
    assert (on_outline < 90).all()  # dark ink all around the head circle
    centre = head.mean(0)
    assert bgr_at(img, centre + 0.5 * (head[0] - centre)).min() > 240  # the inside is white where 0
    dots = np.array([bgr_at(img, p).max() for p in topomap.sensor_px])
    assert np.mean(dots < 200) > 0.9  # every sensor is marked


def test_positive_and_negative_map_to_red_and_blue(topomap):
    xy = topomap.sensor_px
    front = xy[:, 1] < np.median(xy[:, 1])  # image rows grow downwards: the front (nose) is up
    img = topomap.render(np.where(front, 2.0, -2.0), vmax=2.0)
    head = topomap.outline_px[0]
    centre, r = head.mean(0), np.abs(head - head.mean(0)).max()
    b, g, red = median_bgr_near(img, centre + (0.25 * r, -0.55 * r))  # in front, between sensors
    assert red > b + 50
    b, g, red = median_bgr_near(img, centre + (0.25 * r, 0.55 * r))  # behind
    assert b > red + 50
    # a colour bar from red (top) to blue (bottom) beside the map
    x, top, bottom = topomap.bar
    bar = img[top + 2 : bottom - 2, x - topomap.bar_w // 2 - 3].astype(int)
    assert bar[0, 2] > bar[0, 0] + 50 and bar[-1, 0] > bar[-1, 2] + 50


def test_interpolation_matches_mne_plot_topomap(info):
    geo = mne_topomap_geometry(info)
    x0, x1, y0, y1 = geo["extent"]
    centre, radius = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), (x1 - x0) / 2
    w = interpolation_matrix(geo["xy"], centre, radius, 64)
    rng = np.random.default_rng(0)
    for values, min_r in ((np.sin(3 * geo["xy"][:, 0] / radius) + geo["xy"][:, 1] / radius, 0.99),
                          (rng.standard_normal(len(geo["xy"])), 0.9)):
        im, _ = mne.viz.plot_topomap(values, info, axes=Figure().add_subplot(), show=False, contours=0, res=64)
        assert list(im.get_extent()) == list(geo["extent"])
        ref = np.ma.filled(im.get_array().astype(float), np.nan)[::-1]  # MNE's rows go up
        mine = (w @ values).reshape(64, 64)
        both = np.isfinite(ref) & (np.abs(w).sum(1).reshape(64, 64) > 0)
        assert both.sum() > 0.5 * np.pi / 4 * 64**2
        assert np.corrcoef(ref[both], mine[both])[0, 1] > min_r


def test_compose_panels_at_readable_size_for_any_decoder_output(info):
    times = np.linspace(0, 1, 50)
    renderer = PanelRenderer(info, times, size=SIZE, decoder="ridge_pixels", phosphene="argus_scoreboard")
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    z = rng.standard_normal((len(info.ch_names), 50))
    scores = {f"{p}_{k}": 0.1 for p in ("path", "floor", "ceiling") for k in ("ssim", "pearson")}
    for decoded in (rng.random((32, 32)), rng.random((24, 40)), rng.random((96, 96))):
        panel = renderer.compose(frame, z, decoded, rng.random((41, 71)), scores)
        assert panel.shape == (TITLE_H + SIZE + FOOTER_H, 5 * SIZE, 3) and panel.dtype == np.uint8
    with pytest.raises(ValueError, match="panel_size"):
        PanelRenderer(info, times, size=100)
    with pytest.raises(ValueError, match=r"\(n_channels, 50 times\)"):
        renderer.compose(frame, z[:, :10], decoded, decoded, scores)


def test_images_keep_aspect_and_pixels():
    checker = np.kron([[0.0, 1.0], [1.0, 0.0]], np.ones((2, 2)))  # 4 x 4, 2 x 2 blocks
    tile = fit_image(checker, 200)
    assert tile.shape == (200, 200, 3)
    assert (tile[:100, :100] == 0).all() and (tile[:100, 100:] == 255).all()  # nearest: crisp blocks
    wide = fit_image(np.ones((20, 40)), 200)  # letterboxed, not stretched
    white_rows = np.flatnonzero((wide == 255).all(axis=(1, 2)))
    assert len(white_rows) == 100 and white_rows[0] == 50
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB
    assert tuple(fit_image(rgb, 160)[80, 80]) == (0, 0, 255)  # red in OpenCV's BGR
    with pytest.raises(ValueError, match="shape"):
        fit_image(np.zeros(5), 160)
