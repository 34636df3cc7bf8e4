"""``sorted_unique`` against ``np.unique`` (its reference) on the inputs the project feeds it."""
import numpy as np
import pytest

from ratingctr.unique import compact_codes, reference_compact_codes, reference_sorted_unique, sorted_unique


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32, np.int8, bool])
@pytest.mark.parametrize("size", [0, 1, 2, 7, 10_000])
def test_equals_np_unique(dtype, size: int) -> None:
    rng = np.random.default_rng(size)
    high = 2 if dtype is bool else 100 if dtype is np.int8 else max(2, size // 3)
    values = rng.integers(0 if dtype in (bool, np.uint32) else -high, high, size).astype(dtype)
    got = sorted_unique(values)
    want = reference_sorted_unique(values)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_interaction_keys_flattened_sorted_and_input_untouched() -> None:
    users = np.array([3, 1, 3, 2, 1, 3], np.int64)
    items = np.array([5, 4, 5, 9, 4, 1], np.int64)
    keys = users * 11 + items
    before = keys.copy()
    assert sorted_unique(keys).tolist() == [15, 31, 34, 38]
    assert np.array_equal(keys, before)  # sorts a copy
    assert sorted_unique(keys.reshape(2, 3)).tolist() == [15, 31, 34, 38]


def test_large_keys_with_many_duplicates() -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 10**12, 200_000)
    keys = np.concatenate([keys, keys[::3]])
    assert np.array_equal(sorted_unique(keys), reference_sorted_unique(keys))


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_compact_codes_equals_np_unique_with_inverse(size: int) -> None:
    rng = np.random.default_rng(size)
    codes = rng.integers(0, size, 3 * size)
    codes = codes[codes % 3 != 1] if size > 1 else codes  # leave gaps to close
    kept, inverse = compact_codes(codes, size)
    want_kept, want_inverse = reference_compact_codes(codes)
    assert np.array_equal(kept, want_kept) and np.array_equal(inverse, want_inverse)
    assert np.array_equal(kept[inverse], codes)


def test_compact_codes_known_answer_and_range() -> None:
    kept, inverse = compact_codes(np.array([7, 2, 7, 4]), 9)
    assert kept.tolist() == [2, 4, 7] and inverse.tolist() == [2, 0, 2, 1]
    assert compact_codes(np.array([], np.int64), 3)[0].size == 0
    with pytest.raises(ValueError):
        compact_codes(np.array([3]), 3)
