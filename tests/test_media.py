"""Image loading: every accepted input form, and a typed error naming the input for every bad one."""

import io

import pytest
from PIL import Image

from e5v_qdrant import E5VImageError
from e5v_qdrant.media import load_image
from e5v_qdrant.testing import draw_image


def _png_bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_all_input_forms_give_the_same_rgb_pixels(tmp_path):
    img = draw_image(40, 30, seed=3)
    data = _png_bytes(img)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    bio = io.BytesIO(data)
    bio.read()  # a consumed stream must be rewound
    loaded = [load_image(x) for x in (str(path), path, data, bytearray(data), bio, img)]
    for out in loaded:
        assert out.mode == "RGB" and out.size == (40, 30)
        assert out.tobytes() == img.tobytes()


def test_exif_orientation_is_applied():
    img = draw_image(40, 20, seed=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = load_image(_png_bytes(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_modes_are_converted_and_animation_uses_first_frame():
    rgba = draw_image(16, 16, seed=2).convert("RGBA")
    assert load_image(_png_bytes(rgba)).mode == "RGB"
    assert load_image(_png_bytes(draw_image(16, 16).convert("L"))).mode == "RGB"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = load_image(buf.getvalue())
    r, g, b = out.getpixel((4, 4))
    assert r > 200 and b < 50


def test_bad_inputs_raise_typed_errors_naming_the_input(tmp_path):
    good = _png_bytes(draw_image(64, 64))
    cases = {
        "truncated.png": good[: len(good) // 2],
        "empty.png": b"",
        "not_image.png": b"this is plain text, not a picture" * 10,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(E5VImageError) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(E5VImageError, match="missing.png: no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(E5VImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(E5VImageError, match=r"bytes\[0\]"):
        load_image(b"")
    with pytest.raises(E5VImageError, match="URL"):
        load_image("https://example.com/a.png")
    with pytest.raises(E5VImageError, match="unsupported image input type"):
        load_image(12345)


def test_huge_pixel_count_is_refused_before_decoding(tmp_path):
    # A 20000x20000 1-bit PNG is a few KB on disk but 400 MP decoded.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(E5VImageError, match="bomb.png.*pixels"):
        load_image(bomb)
    with pytest.raises(E5VImageError, match="exceeds the limit of 100"):
        load_image(_png_bytes(draw_image(20, 20)), max_pixels=100)
