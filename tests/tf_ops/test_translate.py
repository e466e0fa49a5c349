"""Translation kernels: the XLA, projective and simple paths agree; switch and errors."""
import numpy as np
import pytest
import tensorflow as tf

from ptycho.tf import ops as tf_ops

RNG = np.random.default_rng(7)
IMAGES = RNG.random((6, 20, 24, 2)).astype(np.float32)
SUBPIXEL = RNG.uniform(-6.0, 6.0, size=(6, 2)).astype(np.float32)
INTEGER = np.array([[0, 0], [1, 0], [0, -2], [-3, 4], [25, 0], [-7, -19]], dtype=np.float32)


def _shift_integer(images, translations):
    """Numpy oracle: out[b, y, x] = images[b, y - dy, x - dx], zero outside."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    for b, (dx, dy) in enumerate(translations.astype(int)):
        ys, xs = slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0))
        src_y = slice(max(-dy, 0), height + min(-dy, 0))
        src_x = slice(max(-dx, 0), width + min(-dx, 0))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[b, ys, xs] = images[b, src_y, src_x]
    return out


def _three_paths(images, translations):
    return (
        tf_ops.translate_xla(images, translations).numpy(),
        tf_ops.translate_projective(images, translations).numpy(),
        tf_ops._translate_images_simple(images, translations[:, 0], translations[:, 1]).numpy(),
    )


@pytest.mark.parametrize(
    ("value", "flag", "expected"),
    [
        (None, None, True),
        (None, False, False),
        ("0", True, False),
        ("OFF", None, False),
        ("no", True, False),
        ("1", False, True),
        ("True", False, True),
        (" yes ", False, True),
        ("", False, False),
    ],
)
def test_should_use_xla_env_overrides_flag(monkeypatch, value, flag, expected):
    if value is None:
        monkeypatch.delenv("USE_XLA_TRANSLATE", raising=False)
    else:
        monkeypatch.setenv("USE_XLA_TRANSLATE", value)
    assert tf_ops.should_use_xla(flag) is expected


def test_should_use_xla_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("USE_XLA_TRANSLATE", "maybe")
    with pytest.raises(ValueError, match="USE_XLA_TRANSLATE.*'maybe'.*false"):
        tf_ops.should_use_xla()


def test_integer_shifts_are_exact_on_every_path():
    expected = _shift_integer(IMAGES, INTEGER)
    for result in _three_paths(IMAGES, INTEGER):
        np.testing.assert_array_equal(result, expected)


def test_subpixel_shifts_agree_across_paths():
    xla, projective, simple = _three_paths(IMAGES, SUBPIXEL)
    np.testing.assert_allclose(xla, projective, atol=1e-5)
    np.testing.assert_allclose(simple, projective, atol=1e-5)


def test_subpixel_shift_is_bilinear():
    image = np.zeros((1, 5, 5, 1), np.float32)
    image[0, 2, 2, 0] = 1.0
    result = tf_ops.translate_core(image, [[0.25, 0.5]]).numpy()[0, ..., 0]
    expected = np.zeros((5, 5))
    expected[2:4, 2:4] = [[0.75 * 0.5, 0.25 * 0.5], [0.75 * 0.5, 0.25 * 0.5]]
    np.testing.assert_allclose(result, expected, atol=1e-7)


def test_nearest_agrees_between_xla_and_projective():
    xla = tf_ops.translate_xla(IMAGES, SUBPIXEL, interpolation="nearest").numpy()
    projective = tf_ops.translate_projective(IMAGES, SUBPIXEL, interpolation="nearest").numpy()
    np.testing.assert_array_equal(xla, projective)
    np.testing.assert_array_equal(xla, _shift_integer(IMAGES, np.round(SUBPIXEL)))


def test_xla_path_compiles_under_jit_and_matches():
    compiled = tf.function(tf_ops.translate_xla, jit_compile=True)
    result = compiled(tf.constant(IMAGES), tf.constant(SUBPIXEL)).numpy()
    np.testing.assert_allclose(result, tf_ops.translate_projective(IMAGES, SUBPIXEL), atol=1e-5)


def test_translate_core_dispatch(monkeypatch):
    calls = []
    monkeypatch.setattr(tf_ops, "_warp_gather", lambda *a: calls.append("xla") or a[0])
    monkeypatch.setattr(
        tf_ops, "_warp_projective", lambda *a: calls.append("projective") or a[0]
    )
    monkeypatch.setenv("USE_XLA_TRANSLATE", "0")
    tf_ops.translate_core(IMAGES, SUBPIXEL)
    tf_ops.translate_core(IMAGES, SUBPIXEL, use_xla_workaround=True)
    tf_ops.translate(IMAGES, SUBPIXEL, use_xla=True)
    monkeypatch.delenv("USE_XLA_TRANSLATE")
    tf_ops.translate_core(IMAGES, SUBPIXEL)
    tf_ops.translate(IMAGES, SUBPIXEL, use_xla=False)
    assert calls == ["projective", "xla", "projective", "xla", "projective"]


@pytest.mark.parametrize("use_xla", [True, False])
def test_translate_complex_and_float64(use_xla):
    complex_images = (IMAGES + 1j * IMAGES[::-1]).astype(np.complex64)
    result = tf_ops.translate(complex_images, SUBPIXEL, use_xla=use_xla)
    assert result.dtype == tf.complex64
    real = tf_ops.translate(IMAGES, SUBPIXEL, use_xla=use_xla).numpy()
    imag = tf_ops.translate(IMAGES[::-1].copy(), SUBPIXEL, use_xla=use_xla).numpy()
    np.testing.assert_allclose(result.numpy(), real + 1j * imag, atol=1e-6)
    double = tf_ops.translate(IMAGES.astype(np.float64), SUBPIXEL, use_xla=use_xla)
    assert double.dtype == tf.float64
    np.testing.assert_allclose(double.numpy(), real, atol=1e-5)


def test_gradients_agree_between_paths():
    images = tf.constant(IMAGES)
    weights = tf.constant(RNG.random(IMAGES.shape).astype(np.float32))
    grads = []
    for use_xla in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf_ops.translate(images, SUBPIXEL, use_xla=use_xla) * weights)
        grads.append(tape.gradient(loss, images).numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)
    assert np.abs(grads[0]).max() > 0.1


@pytest.mark.parametrize("use_xla", [True, False])
def test_dynamic_batch_repeats_translations_in_graph(use_xla):
    spec = [tf.TensorSpec([None, 20, 24, 2]), tf.TensorSpec([None, 2])]
    graph = tf.function(
        lambda i, t: tf_ops.translate(i, t, use_xla=use_xla), input_signature=spec
    )
    result = graph(IMAGES, SUBPIXEL[:2]).numpy()
    expected = tf_ops.translate(IMAGES, np.repeat(SUBPIXEL[:2], 3, axis=0), use_xla=use_xla)
    np.testing.assert_allclose(result, expected.numpy(), atol=1e-6)
    for bad in (SUBPIXEL[:4], SUBPIXEL[:0]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of"):
            graph(IMAGES, bad)


@pytest.mark.parametrize(
    ("images", "translations", "kwargs", "match"),
    [
        (IMAGES, SUBPIXEL, {"interpolation": "bicubic"}, "interpolation must be one of"),
        (IMAGES[0], SUBPIXEL, {}, r"images must be \(b, H, W, c\)"),
        (IMAGES, SUBPIXEL[:, :1], {}, r"translations must be \(b, 2\)"),
        (IMAGES.astype(np.int32), SUBPIXEL, {}, "float or complex"),
        (IMAGES, np.zeros((0, 2), np.float32), {}, "multiple of"),
    ],
)
def test_bad_input_raises_value_error(images, translations, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tf_ops.translate_core(images, translations, **kwargs)


@pytest.mark.parametrize("use_xla", [True, False])
def test_flattened_images_repeat_translations_on_both_paths(use_xla):
    result = tf_ops.translate(IMAGES, SUBPIXEL[:3], use_xla=use_xla).numpy()
    expected = tf_ops.translate(IMAGES, np.repeat(SUBPIXEL[:3], 2, axis=0), use_xla=use_xla)
    np.testing.assert_array_equal(result, expected.numpy())
