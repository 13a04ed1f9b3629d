"""regions: box validation, masks, saliency squares, explicit boxes and their file."""

from __future__ import annotations

import json

import pytest
import torch

from adaptanon.preprocessing import Preprocess
from adaptanon.regions import (
    ExplicitBoxes,
    RegionQuery,
    RegionSource,
    SaliencyBox,
    best_square,
    load_boxes_file,
    parse_region_source,
    region_mask,
    validate_boxes,
)


def find_boxes(source: RegionSource, name, image, geometry, saliency):
    """The boxes ``source`` finds in one image; its error raised as ValueError."""
    (found,) = source.find([RegionQuery(name, image, geometry, saliency)])
    if found.error is not None:
        raise ValueError(found.error)
    return found.boxes


def test_validate_boxes_clips_and_rounds():
    boxes = validate_boxes([[-5, -3, 10, 12], [20.4, 5.6, 200, 39.5], [1, 2, 3, 4]], 40, 50)
    assert boxes == [(0, 0, 10, 12), (20, 6, 50, 40), (1, 2, 3, 4)]
    assert all(isinstance(v, int) for b in boxes for v in b)


def test_validate_boxes_accepts_empty_list():
    assert validate_boxes([], 10, 10) == []


@pytest.mark.parametrize(
    "box,match",
    [
        ([5, 5, 5, 10], "empty"),  # zero width
        ([5, 10, 9, 2], "empty"),  # y1 < y0
        ([60, 0, 70, 10], "outside"),  # right of a 50-wide image
        ([0, -20, 10, -1], "outside"),  # above the image
        ([1, 2, 3], "x0, y0, x1, y1"),  # wrong length
        ([1, 2, 3, 4, 5], "x0, y0, x1, y1"),
        (["1", 2, 3, 4], "x0, y0, x1, y1"),  # not numbers
        ([None, 2, 3, 4], "x0, y0, x1, y1"),
    ],
)
def test_validate_boxes_errors(box, match):
    with pytest.raises(ValueError, match=match):
        validate_boxes([box], 40, 50)


def test_validate_boxes_flat_list_is_a_value_error():
    """A common mistake in a boxes file: one box written flat ("a.png": [1, 2, 3, 4]) instead
    of a list of boxes. It must be reported as an invalid box (ValueError, which the pipeline
    turns into a per-image `error`), not crash with a TypeError."""
    with pytest.raises(ValueError):
        validate_boxes([1, 2, 3, 4], 40, 50)


def test_region_mask_rect_and_ellipse():
    rect = region_mask(10, 12, [(2, 3, 6, 8), (8, 0, 12, 2)])
    assert rect.shape == (10, 12) and rect.dtype == torch.bool
    assert int(rect.sum()) == 4 * 5 + 4 * 2
    assert bool(rect[3:8, 2:6].all()) and not bool(rect[8:, :].any())
    ell = region_mask(20, 20, [(0, 0, 20, 20)], "ellipse")
    assert bool(ell[10, 10]) and not bool(ell[0, 0]) and not bool(ell[19, 19])
    assert bool(ell[10, 0]) and bool(ell[0, 10])  # the ellipse touches the box's edges
    assert torch.equal(ell, ell.flip(0)) and torch.equal(ell, ell.flip(1))
    assert bool((ell <= region_mask(20, 20, [(0, 0, 20, 20)])).all())


def test_region_mask_rejects_unknown_shape():
    with pytest.raises(ValueError):
        region_mask(5, 5, [(0, 0, 2, 2)], "circle")


@pytest.mark.parametrize("x0,y0,size", [(0, 0, 5), (11, 3, 6), (25, 25, 7), (3, 20, 12)])
def test_best_square_finds_planted_hot_square(x0, y0, size):
    gen = torch.Generator().manual_seed(x0 + y0)
    sal = torch.rand(32, 32, generator=gen) * 0.1
    sal[y0 : y0 + size, x0 : x0 + size] += 1.0
    assert best_square(sal, size) == (x0, y0, x0 + size, y0 + size)


def test_best_square_clamps_size_to_map():
    sal = torch.zeros(8, 10)
    sal[2, 7] = 5.0
    x0, y0, x1, y1 = best_square(sal, 50)
    assert (x1 - x0, y1 - y0) == (8, 8)
    assert 0 <= x0 and x1 <= 10 and y0 == 0 and y1 == 8
    assert x0 <= 7 < x1


def test_explicit_boxes_lookup_relative_path_then_basename():
    src = ExplicitBoxes(
        {
            "sub/a.png": [[0, 0, 5, 5]],
            "a.png": [[10, 10, 20, 20]],
            "win\\b.png": [[1, 1, 2, 2]],
        }
    )
    img = torch.zeros(3, 30, 30)
    assert find_boxes(src, "sub/a.png", img, None, None) == [(0, 0, 5, 5)]
    assert find_boxes(src, "other/a.png", img, None, None) == [(10, 10, 20, 20)]
    assert find_boxes(src, "a.png", img, None, None) == [(10, 10, 20, 20)]
    assert find_boxes(src, "win/b.png", img, None, None) == [(1, 1, 2, 2)]
    assert find_boxes(src, "nothing.png", img, None, None) == []
    assert find_boxes(src, "sub\\a.png", img, None, None) == [(0, 0, 5, 5)]
    assert not src.uses_saliency and src.describe() == "boxes"


def test_explicit_boxes_are_validated_against_the_image():
    src = ExplicitBoxes({"a.png": [[-5, 0, 100, 10]], "bad.png": [[40, 40, 50, 50]]})
    img = torch.zeros(3, 20, 30)
    assert find_boxes(src, "a.png", img, None, None) == [(0, 0, 30, 10)]
    with pytest.raises(ValueError):
        find_boxes(src, "bad.png", img, None, None)


def test_load_boxes_file(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"x/y.jpg": [[1, 2, 3, 4]]}))
    src = load_boxes_file(path)
    assert isinstance(src, ExplicitBoxes)
    assert find_boxes(src, "x/y.jpg", torch.zeros(3, 10, 10), None, None) == [(1, 2, 3, 4)]


@pytest.mark.parametrize(
    "text",
    ['{"a.png": [[1, 2, 3, 4]', "not json", "[[1, 2, 3, 4]]", '{"a.png": "1,2,3,4"}', ""],
)
def test_load_boxes_file_rejects_bad_content(tmp_path, text):
    path = tmp_path / "boxes.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="boxes file"):
        load_boxes_file(path)


def test_load_boxes_file_missing(tmp_path):
    with pytest.raises(ValueError):
        load_boxes_file(tmp_path / "nope.json")


def test_parse_region_source(tmp_path):
    s = parse_region_source("saliency")
    assert isinstance(s, SaliencyBox) and s.size == 50 and s.uses_saliency
    assert parse_region_source("saliency:20").size == 20
    path = tmp_path / "b.json"
    path.write_text('{"a.png": []}')
    assert isinstance(parse_region_source(f"boxes={path}"), ExplicitBoxes)
    for bad in ("face", "boxes", "saliency:abc", "saliency:0", "", "faces+faces"):
        with pytest.raises(ValueError):
            parse_region_source(bad)


def test_saliency_box_maps_hot_square_to_input_pixels():
    spec = Preprocess(40, 32)
    g = spec.geometry(60, 80)  # resized 40x53, view offset (4, 10), scale 1.5
    sal = torch.zeros(32, 32)
    sal[4:12, 20:28] = 1.0
    (box,) = find_boxes(SaliencyBox(8), "x.png", torch.zeros(3, 60, 80), g, sal)
    assert box == g.view_box_to_input((20, 4, 28, 12))
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
    assert x1 - x0 >= 8 * g.scale and y1 - y0 >= 8 * g.scale
    with pytest.raises(ValueError):
        find_boxes(SaliencyBox(8), "x.png", torch.zeros(3, 60, 80), None, sal)
    with pytest.raises(ValueError):
        find_boxes(SaliencyBox(8), "x.png", torch.zeros(3, 60, 80), g, None)


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_integers_too_large_for_a_float_are_invalid_boxes(value):
    with pytest.raises(ValueError, match="finite"):
        validate_boxes([[0, 0, value, 5]], 10, 10)


def test_deeply_nested_boxes_file_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="cannot read boxes file"):
        load_boxes_file(path)
