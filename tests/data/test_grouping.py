"""Grouping of scan positions: shapes, determinism, compactness, row-major order, errors."""
import numpy as np
import pytest

from ptycho.data.grouping import GroupingError, compact_subset, group_positions

SCALED = dict(gridsize=2, neighbor_count=7, n_groups=32)


@pytest.fixture
def lattice():
    """A jittered 12 x 12 raster, 10 px step."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:12, 0:12] * 10.0
    return xx.ravel() + rng.uniform(-1, 1, 144), yy.ravel() + rng.uniform(-1, 1, 144)


def test_gridsize_one_samples_distinct_positions(lattice):
    groups = group_positions(*lattice, gridsize=1, neighbor_count=1, n_groups=144, seed=0)
    assert groups.nn_indices.shape == (144, 1) and groups.channels == 1
    assert len(np.unique(groups.nn_indices)) == 144
    assert np.all(groups.coords_relative == 0)


def test_same_seed_same_groups_other_seed_other_groups(lattice):
    a = group_positions(*lattice, **SCALED, seed=3)
    b = group_positions(*lattice, **SCALED, seed=3)
    c = group_positions(*lattice, **SCALED, seed=4)
    assert np.array_equal(a.nn_indices, b.nn_indices)
    assert not np.array_equal(a.nn_indices, c.nn_indices)


def test_members_are_distinct_nearest_neighbours_of_one_member(lattice):
    x, y = lattice
    points = np.c_[x, y]
    groups = group_positions(x, y, gridsize=3, neighbor_count=12, n_groups=40, seed=1)
    for members in groups.nn_indices:
        assert len(set(members)) == 9
        # some member is the seed: all others lie among its 12 nearest positions of the whole scan
        def within_k(seed):
            order = np.argsort(np.hypot(*(points - points[seed]).T), kind="stable")[:12]
            return set(members) <= set(order)
        assert any(within_k(m) for m in members)


def test_channels_are_row_major(lattice):
    groups = group_positions(*lattice, gridsize=3, neighbor_count=9, n_groups=50, seed=2)
    x = groups.coords_nn[:, 0, 0, :].reshape(-1, 3, 3)
    y = groups.coords_nn[:, 0, 1, :].reshape(-1, 3, 3)
    assert np.all(y[:, :-1, :].max(axis=2) <= y[:, 1:, :].min(axis=2))
    assert np.all(np.diff(x, axis=2) >= 0)


def test_coordinates_follow_nn_indices(lattice):
    x, y = lattice
    groups = group_positions(x, y, **SCALED, seed=5)
    np.testing.assert_array_equal(groups.coords_nn[:, 0, 0, :], x[groups.nn_indices])
    np.testing.assert_array_equal(groups.coords_nn[:, 0, 1, :], y[groups.nn_indices])


def test_scaled_settings_stay_compact_for_20_seeds(dataset_512):
    """The reference's NaN defect at the data level: offsets must stay well inside N/2."""
    train, _ = dataset_512
    N = train.N
    worst = 0.0
    for seed in range(20):
        subset = compact_subset(train.xcoords, train.ycoords, 64, seed)
        groups = group_positions(train.xcoords[subset], train.ycoords[subset], **SCALED, seed=seed)
        assert groups.coords_relative.shape == (32, 1, 2, 4)
        assert np.all(np.isfinite(groups.coords_relative))
        worst = max(worst, float(np.abs(groups.coords_relative).max()))
    assert worst < 0.75 * N / 2


def test_grouping_among_scattered_seeds_would_not_be_compact(dataset_512):
    """Control for the test above: the reference's way (neighbours among 32 scattered points) spreads out."""
    train, _ = dataset_512
    scattered = np.random.default_rng(0).choice(train.n_images, 32, replace=False)
    groups = group_positions(train.xcoords[scattered], train.ycoords[scattered], **SCALED, seed=0)
    assert np.abs(groups.coords_relative).max() > train.N / 2


def test_compact_subset_is_the_nearest_block(dataset_512):
    train, _ = dataset_512
    points = np.c_[train.xcoords, train.ycoords]
    subset = compact_subset(train.xcoords, train.ycoords, 64, seed=7)
    assert len(subset) == 64 and np.all(np.diff(subset) > 0)
    outside = np.setdiff1d(np.arange(train.n_images), subset)
    # some member is closer to every other member than to any position left out
    reach = [np.hypot(*(points[subset] - points[m]).T).max() for m in subset]
    gap = [np.hypot(*(points[outside] - points[m]).T).min() for m in subset]
    assert any(r <= g for r, g in zip(reach, gap))
    np.testing.assert_array_equal(compact_subset(train.xcoords, train.ycoords, 64, seed=7), subset)
    assert np.array_equal(compact_subset(train.xcoords, train.ycoords, train.n_images, 0), np.arange(train.n_images))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gridsize=2, neighbor_count=3, n_groups=4), "must be >= gridsize"),
        (dict(gridsize=0, neighbor_count=3, n_groups=4), "gridsize must be an integer >= 1"),
        (dict(gridsize=2.0, neighbor_count=7, n_groups=4), "gridsize must be an integer"),
        (dict(gridsize=2, neighbor_count=7, n_groups=0), "n_groups must be an integer >= 1"),
        (dict(gridsize=2, neighbor_count=7, n_groups=11), r"n_groups \(11\) exceeds"),
        (dict(gridsize=1, neighbor_count=1, n_groups=11), r"n_groups \(11\) exceeds"),
        (dict(gridsize=2, neighbor_count=11, n_groups=4), r"neighbor_count \(K=11\) exceeds"),
    ],
    ids=["K_less_than_C", "gridsize_zero", "gridsize_float", "no_groups", "too_many_groups",
         "too_many_groups_gridsize_1", "K_more_than_positions"],
)
def test_impossible_requests(kwargs, message):
    x = np.arange(10.0)
    with pytest.raises(GroupingError, match=message):
        group_positions(x, x, seed=0, **kwargs)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.array([0.0, np.nan, 2.0]), np.zeros(3), "NaN or Inf"),
        (np.zeros(3), np.zeros(4), "equal length"),
        (np.zeros(0), np.zeros(0), "no scan positions"),
    ],
    ids=["nan", "lengths", "empty"],
)
def test_bad_coordinates(x, y, message):
    with pytest.raises(GroupingError, match=message):
        group_positions(x, y, gridsize=1, neighbor_count=1, n_groups=1, seed=0)
    with pytest.raises(GroupingError, match=message):
        compact_subset(x, y, 1, seed=0)


def test_compact_subset_rejects_too_many_images():
    with pytest.raises(GroupingError, match="n_images"):
        compact_subset(np.arange(5.0), np.arange(5.0), 6, seed=0)


def test_duplicate_positions_still_give_distinct_members():
    x = np.zeros(10)
    groups = group_positions(x, x, gridsize=2, neighbor_count=4, n_groups=10, seed=0)
    assert all(len(set(members)) == 4 for members in groups.nn_indices)
    assert np.all(groups.coords_relative == 0)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_n_groups_none_seeds_a_group_at_every_training_position(dataset_512, gridsize):
    """GroupingSpec(n_groups=None): one group per training position (after the n_images subset), so no
    position is left out of training (at gridsize 1 each is one group: see the test above)."""
    from ptycho.data.batches import prepare_job_data
    from ptycho.spec import GroupingSpec, ModelSpec

    train, test = dataset_512
    spec = GroupingSpec(gridsize=gridsize, n_groups=None, n_images=100)
    assert spec.groups_for(100) == 100 and GroupingSpec(n_groups=32).groups_for(100) == 32
    _, grouped, *_ = prepare_job_data(train, test, spec, ModelSpec(gridsize=gridsize))
    assert grouped.n_groups == 100


@pytest.mark.parametrize("value", [0, -3, 2.5, "all"])
def test_grouping_spec_rejects_a_count_that_is_not_none_or_positive(value):
    from ptycho.spec import GroupingSpec

    with pytest.raises(ValueError, match="GroupingSpec.n_groups"):
        GroupingSpec(n_groups=value)
