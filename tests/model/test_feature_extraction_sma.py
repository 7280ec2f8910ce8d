import json

import numpy as np
import pytest
import torch

from sma_hf.feature_extraction_sma import SMAFeatureExtractor


def test_variable_length_batch_right_padding():
    fe = SMAFeatureExtractor(input_channels=3, padding_value=-1.0)
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    b = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = fe([a, b], return_tensors="pt")
    assert set(out.keys()) == {"inputs", "attention_mask"}
    assert out["inputs"].shape == (2, 4, 3) and out["inputs"].dtype == torch.float32
    assert out["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    np.testing.assert_array_equal(out["inputs"][0, :2].numpy(), a)
    assert (out["inputs"][0, 2:] == -1.0).all()
    np.testing.assert_array_equal(out["inputs"][1].numpy(), b)


def test_left_padding():
    fe = SMAFeatureExtractor(input_channels=2, padding_side="left")
    a = np.ones((1, 2))
    out = fe([a, np.full((3, 2), 2.0)], return_tensors="np")
    assert out["attention_mask"].tolist() == [[0, 0, 1], [1, 1, 1]]
    assert out["inputs"][0].tolist() == [[0, 0], [0, 0], [1, 1]]


def test_single_example_forms_get_a_batch_dimension():
    fe = SMAFeatureExtractor(input_channels=2)
    single = fe(np.zeros((5, 2)), return_tensors="np")
    assert single["inputs"].shape == (1, 5, 2)
    # A 3-D array is a batch of equal-length examples.
    assert fe(torch.zeros(4, 5, 2), return_tensors="np")["inputs"].shape == (4, 5, 2)
    # Nested lists: the outer list is the batch.
    assert fe([[[1, 2], [3, 4]]], return_tensors="np")["inputs"].shape == (1, 2, 2)


def test_tabular_rows():
    fe = SMAFeatureExtractor(input_channels=1)
    one = fe([0.5, 1.5, 2.5], return_tensors="np")
    assert one["inputs"].shape == (1, 3, 1)
    assert one["inputs"][0, :, 0].tolist() == [0.5, 1.5, 2.5]
    rows = fe([[1.0, 2.0, 3.0], [4.0, 5.0]], return_tensors="np")
    assert rows["inputs"].shape == (2, 3, 1)
    assert rows["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert rows["inputs"][1, :, 0].tolist() == [4.0, 5.0, 0.0]


def test_grayscale_image_is_flattened_row_major():
    height, width = 3, 4
    image = np.zeros((height, width))
    image[2, 1] = 7.0
    out = SMAFeatureExtractor(input_channels=1)(image, is_image=True, return_tensors="np")
    assert out["inputs"].shape == (1, height * width, 1)
    assert out["inputs"][0, 2 * width + 1, 0] == 7.0
    assert out["inputs"].sum() == 7.0


def test_color_images_flattened_row_major_and_batched():
    height, width = 2, 5
    image = np.zeros((height, width, 3))
    image[1, 3] = [1.0, 2.0, 3.0]
    fe = SMAFeatureExtractor(input_channels=3)
    out = fe(image, is_image=True, return_tensors="np")
    assert out["inputs"].shape == (1, 10, 3)
    assert out["inputs"][0, 1 * width + 3].tolist() == [1.0, 2.0, 3.0]
    # With is_image, a 4-D array is a batch and a list of images of different sizes is padded.
    assert fe(np.stack([image, image]), is_image=True, return_tensors="np")["inputs"].shape == (2, 10, 3)
    mixed = fe([image, np.ones((1, 2, 3))], is_image=True, return_tensors="np")
    assert mixed["attention_mask"].sum(axis=1).tolist() == [10, 2]
    # Without is_image, the same [H, W, C] array is a batch of H sequences.
    assert fe(image, return_tensors="np")["inputs"].shape == (2, 5, 3)


def test_padding_options():
    fe = SMAFeatureExtractor(input_channels=1)
    rows = [[1.0, 2.0, 3.0], [4.0]]
    assert fe(rows, padding="max_length", max_length=6, return_tensors="np")["inputs"].shape == (2, 6, 1)
    assert fe(rows, pad_to_multiple_of=4, return_tensors="np")["attention_mask"].shape == (2, 4)
    truncated = fe(rows, truncation=True, max_length=2, return_tensors="np")
    assert truncated["inputs"][:, :, 0].tolist() == [[1.0, 2.0], [4.0, 0.0]]
    unpadded = fe(rows, padding=False)
    assert [len(x) for x in unpadded["inputs"]] == [3, 1]
    assert "attention_mask" not in fe(rows, return_attention_mask=False)


def test_fit_normalizes_real_elements_and_leaves_padding():
    rng = np.random.default_rng(0)
    examples = [rng.normal([5.0, -2.0], [3.0, 0.5], size=(n, 2)) for n in (7, 3, 12)]
    fe = SMAFeatureExtractor(input_channels=2, padding_value=-9.0)
    assert fe.fit(examples) is fe
    assert fe.do_normalize is True
    assert len(fe.channel_mean) == len(fe.channel_std) == 2

    out = fe(examples, return_tensors="np")
    mask = out["attention_mask"].astype(bool)
    real = out["inputs"][mask]
    np.testing.assert_allclose(real.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(real.std(axis=0), 1.0, atol=1e-5)
    assert (out["inputs"][~mask] == -9.0).all()


def test_fit_constant_channel_uses_std_one():
    fe = SMAFeatureExtractor(input_channels=2).fit([np.array([[1.0, 4.0], [3.0, 4.0]])])
    assert fe.channel_std[1] == 1.0
    out = fe(np.array([[1.0, 4.0]]), return_tensors="np")
    assert out["inputs"][0, 0].tolist() == [-1.0, 0.0]


def test_fit_accepts_images():
    images = [np.full((2, 2), 1.0), np.full((2, 3), 3.0)]
    fe = SMAFeatureExtractor().fit(images, is_image=True)
    assert fe.channel_mean == pytest.approx([(4 * 1.0 + 6 * 3.0) / 10])


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    examples = [rng.normal(size=(n, 3)) for n in (4, 9)]
    fe = SMAFeatureExtractor(input_channels=3, padding_value=0.5, padding_side="left").fit(examples)
    fe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["channel_mean"] == fe.channel_mean and saved["do_normalize"] is True

    reloaded = SMAFeatureExtractor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == fe.to_dict()
    expected, actual = fe(examples, return_tensors="np"), reloaded(examples, return_tensors="np")
    np.testing.assert_array_equal(actual["inputs"], expected["inputs"])
    np.testing.assert_array_equal(actual["attention_mask"], expected["attention_mask"])


def test_unfitted_extractor_round_trips(tmp_path):
    SMAFeatureExtractor(input_channels=2).save_pretrained(tmp_path)
    reloaded = SMAFeatureExtractor.from_pretrained(tmp_path)
    assert (reloaded.input_channels, reloaded.feature_size, reloaded.do_normalize) == (2, 2, False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_channels": 0}, ValueError, "input_channels"),
        ({"padding_side": "middle"}, ValueError, "padding_side"),
    ],
)
def test_bad_init_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SMAFeatureExtractor(**kwargs)


@pytest.mark.parametrize(
    ("examples", "call_kwargs", "error", "match"),
    [
        (
            [np.ones((2, 3))] * 4 + [np.ones((2, 2))],
            {},
            ValueError,
            "expected input_channels=3 values per element, got 2 in example 4",
        ),
        ([1.0, 2.0], {}, ValueError, "input_channels=1"),
        ([np.ones((2, 3)), np.array([[0.0, np.nan, 1.0]])], {}, ValueError, "example 1 contains NaN or inf"),
        ([np.array([[np.inf, 0.0, 0.0]])], {}, ValueError, "example 0 contains NaN or inf"),
        ([np.ones((2, 3)), np.zeros((0, 3))], {}, ValueError, "example 1 is empty"),
        ([], {}, ValueError, "examples is empty"),
        ([["a", "b", "c"]], {}, TypeError, "numeric"),
        ("CCO", {}, TypeError, "examples must be"),
        ([[[1, 2, 3], [4, 5]]], {}, ValueError, "example 0 is not a rectangular"),
        ([np.ones((2, 2, 3))], {}, ValueError, "got shape"),
        ([np.ones((2, 3))], {"truncation": True}, ValueError, "max_length"),
        ([np.ones((4, 3))], {"padding": "max_length"}, ValueError, "max_length"),
        ([np.ones((4, 3))], {"padding": "max_length", "max_length": 2}, ValueError, "max_length=2"),
        ([np.ones((2, 2))], {"is_image": True}, ValueError, r"image \[H, W\]"),
    ],
)
def test_bad_inputs_raise(examples, call_kwargs, error, match):
    fe = SMAFeatureExtractor(input_channels=3)
    with pytest.raises(error, match=match):
        fe(examples, **call_kwargs)


def test_nan_in_fit_raises():
    with pytest.raises(ValueError, match="example 0 contains NaN"):
        SMAFeatureExtractor().fit([[1.0, float("nan")]])


def test_normalize_without_stats_raises():
    fe = SMAFeatureExtractor(input_channels=2, do_normalize=True)
    with pytest.raises(ValueError, match="do_normalize=True needs channel_mean and channel_std"):
        fe(np.ones((2, 2)))


def test_normalize_with_wrong_stats_raises():
    fe = SMAFeatureExtractor(input_channels=2, do_normalize=True, channel_mean=[0.0], channel_std=[1.0])
    with pytest.raises(ValueError, match="input_channels=2"):
        fe(np.ones((2, 2)))
    fe = SMAFeatureExtractor(input_channels=1, do_normalize=True, channel_mean=[0.0], channel_std=[0.0])
    with pytest.raises(ValueError, match="channel_std"):
        fe([1.0])


def test_unknown_keyword_is_an_error():
    with pytest.raises(TypeError, match="padding_sid"):
        SMAFeatureExtractor(input_channels=1)([1.0, 2.0], padding_sid="left")


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pad_equals_padding_in_the_call_and_serves_transformers_collator(padding_side):
    """`pad` on already-processed rows gives what `__call__` pads, so that `DataCollatorWithPadding` batches them;
    per-element labels are padded with -100 on the same side, one label per example is stacked."""
    from transformers import DataCollatorWithPadding

    extractor = SMAFeatureExtractor(input_channels=2, padding_side=padding_side)
    examples = [
        np.arange(6, dtype=np.float32).reshape(3, 2),
        np.ones((1, 2), np.float32),
        np.zeros((2, 2), np.float32),
    ]
    called = extractor(examples, return_tensors="pt")
    rows = extractor(examples, padding=False)
    features = [
        {"inputs": x.tolist(), "attention_mask": m.tolist(), "labels": label}
        for x, m, label in zip(rows["inputs"], rows["attention_mask"], [0, 1, 1])
    ]
    batch = DataCollatorWithPadding(extractor)(features)
    assert torch.equal(batch["inputs"], called["inputs"]) and torch.equal(
        batch["attention_mask"], called["attention_mask"]
    )
    assert batch["labels"].tolist() == [0, 1, 1]
    for row, label_row in zip(features, [[1, 0, 2], [1], [2, 2]]):
        row["labels"] = label_row
    padded = DataCollatorWithPadding(extractor)(features)["labels"]
    expected = [[1, 0, 2], [1, -100, -100], [2, 2, -100]]
    if padding_side == "left":
        expected = [[1, 0, 2], [-100, -100, 1], [-100, 2, 2]]
    assert padded.tolist() == expected
