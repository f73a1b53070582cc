from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.models.architectures.mnist import (
    MNIST_MEAN,
    MNIST_STD,
    init_mnist_seeded,
    mnist_digits,
    mnist_net,
)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return init_mnist_seeded(mnist_net(), seed=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_maps_digits_to_ten_logits(model: torch.nn.Module, batch: int) -> None:
    with torch.no_grad():
        logits = model(torch.from_numpy(mnist_digits(batch)))
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()


def test_has_the_tensorrt_sample_layers() -> None:
    shapes = {k: tuple(v.shape) for k, v in mnist_net().state_dict().items()}
    assert shapes["conv1.weight"] == (20, 1, 5, 5)
    assert shapes["conv2.weight"] == (50, 20, 5, 5)
    assert shapes["fc1.weight"] == (500, 800)
    assert shapes["fc2.weight"] == (10, 500)


def test_same_seed_gives_same_weights_and_other_seed_differs() -> None:
    first = _state(init_mnist_seeded(mnist_net(), seed=3))
    again = _state(init_mnist_seeded(mnist_net(), seed=3))
    other = _state(init_mnist_seeded(mnist_net(), seed=4))
    assert _states_equal(first, again)
    assert all(not torch.equal(first[k], other[k]) for k in first)


def test_seeded_init_neither_reads_nor_advances_the_global_rng() -> None:
    torch.manual_seed(123)
    after_one_seed = _state(init_mnist_seeded(mnist_net(), seed=0))
    torch.manual_seed(456)
    fresh = mnist_net()  # construction itself draws torch's default init from the global RNG
    rng_before = torch.get_rng_state()
    after_other_seed = _state(init_mnist_seeded(fresh, seed=0))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert _states_equal(after_one_seed, after_other_seed)


def test_state_dict_round_trip_gives_bit_identical_logits(model: torch.nn.Module) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    reloaded = mnist_net()
    reloaded.load_state_dict(torch.load(buffer, weights_only=True))
    reloaded.eval()
    digits = torch.from_numpy(mnist_digits(8))
    with torch.no_grad():
        assert torch.equal(model(digits), reloaded(digits))


def test_logits_are_spread_so_argmax_is_a_meaningful_gate(model: torch.nn.Module) -> None:
    with torch.no_grad():
        logits = model(torch.from_numpy(mnist_digits(30, seed=1)))
    top2 = logits.topk(2, dim=1).values
    margins = top2[:, 0] - top2[:, 1]
    assert (logits.std(dim=1) > 0.3).all()
    assert margins.median() > 0.1  # far above fp32 (and fp16) rounding of logits of this size
    assert len(set(logits.argmax(dim=1).tolist())) >= 3


def test_digits_are_normalized_like_mnist() -> None:
    digits = mnist_digits(20)
    assert digits.shape == (20, 1, 28, 28)
    assert digits.dtype == np.float32
    pixels = digits * MNIST_STD + MNIST_MEAN
    assert pixels.min() == pytest.approx(0.0, abs=1e-6)  # black background
    assert pixels.max() == pytest.approx(1.0, abs=1e-6)  # fully inked stroke centres
    ink = (pixels > 0.1).mean(axis=(1, 2, 3))
    assert ((ink > 0.04) & (ink < 0.3)).all()  # MNIST digits cover roughly 10-20 % of the image


def test_digits_fit_a_20_pixel_box_centred_by_mass() -> None:
    pixels = mnist_digits(30, seed=2)[:, 0] * MNIST_STD + MNIST_MEAN
    inked = pixels > 0.1
    assert (inked.any(axis=2).sum(axis=1) <= 21).all()
    assert (inked.any(axis=1).sum(axis=1) <= 21).all()
    ys, xs = np.indices((28, 28))
    mass = pixels.sum(axis=(1, 2))
    centre_y = (pixels * ys).sum(axis=(1, 2)) / mass
    centre_x = (pixels * xs).sum(axis=(1, 2)) / mass
    assert (np.abs(centre_y - 13.5) < 2).all() and (np.abs(centre_x - 13.5) < 2).all()


def test_digits_are_recognisable_glyphs_not_noise() -> None:
    # 1-nearest-neighbour between two independently jittered sets: chance would be 10 %.
    references = mnist_digits(30, seed=0).reshape(30, -1)
    queries = mnist_digits(100, seed=1).reshape(100, -1)
    distances = ((queries[:, None] - references[None]) ** 2).sum(axis=-1)
    predicted = distances.argmin(axis=1) % 10
    assert (predicted == np.arange(100) % 10).mean() > 0.6


@settings(max_examples=15, deadline=None)
@given(count=st.integers(1, 25), seed=st.integers(0, 2**32 - 1))
def test_digits_are_deterministic_and_prefix_stable(count: int, seed: int) -> None:
    digits = mnist_digits(count, seed)
    assert np.array_equal(digits, mnist_digits(count, seed))
    assert np.array_equal(digits, mnist_digits(count + 3, seed)[:count])
    assert not np.array_equal(digits, mnist_digits(count, seed + 1))
