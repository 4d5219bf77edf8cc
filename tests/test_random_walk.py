"""IRN's pair set, affinities, loss and random walk (wsss/affinity.py, wsss/random_walk.py) on hand-made grids."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.affinity import affinity_loss, directions, pair_labels, pair_set, path, path_affinity, shifted
from wsss.random_walk import propagate, rw_label, transition_transposed


def test_pair_set_sizes_are_the_references():
    assert len(directions(10)) == 152  # forward half-plane, radius 10 (training)
    assert len(directions(5)) == 34    # radius 5 (the random walk)
    assert directions(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    dirs = set(directions(10))
    assert all((-dy, -dx) not in dirs for dy, dx in dirs)  # each unordered pair once
    assert all(dy > 0 or (dy == 0 and dx > 0) for dy, dx in dirs)


def test_paths_by_hand():
    assert set(path(0, 3)) == {(0, 0), (0, 1), (0, 2), (0, 3)}
    # diagonal (3, 3): the 4×4 box minus the points at |x − y| ≥ 2 (distance √2 from the line)
    assert set(path(3, 3)) == {(y, x) for y in range(4) for x in range(4) if abs(x - y) <= 1}
    assert set(path(2, -2)) == {(0, 0), (0, -1), (1, 0), (1, -1), (1, -2), (2, -1), (2, -2)}
    assert all({(0, 0), d} <= set(path(*d)) for d in directions(10))  # both ends on every path


def test_shifted_reads_the_destination_of_every_source():
    grid = torch.arange(4 * 6).reshape(4, 6)
    m = 1  # radius 2: sources rows 0..2, columns 1..4
    for dy, dx in directions(2):
        dst = shifted(grid, dy, dx, m)
        for r in range(3):
            for c in range(1, 5):
                assert dst[r, c - 1] == grid[r + dy, c + dx]


def test_affinity_is_zero_across_a_boundary_pixel_and_one_elsewhere():
    pairs = pair_set(2)
    b = torch.zeros(4, 6)
    b[1, 2] = 1.0
    aff = path_affinity(b, pairs)  # [4 directions, 3, 4]
    # source (1, 1) → (1, 2) crosses it; (0, 3) → (1, 2) ends on it; (2, 3) → (3, 3) does not
    d = {dy_dx: i for i, dy_dx in enumerate(pairs.directions)}
    assert aff[d[(0, 1)], 1, 0] == 0 and aff[d[(1, -1)], 0, 2] == 0
    assert aff[d[(1, 0)], 2, 2] == 1


def test_pair_labels():
    pairs = pair_set(2)
    label = torch.tensor([[0, 0, 1, 1, 255, 0]] * 3, dtype=torch.uint8)
    bg, fg, neg = pair_labels(label, pairs)
    d = {dy_dx: i for i, dy_dx in enumerate(pairs.directions)}
    # sources are columns 1..4: (0,1) from column 1 (0 → 1) is negative, from 2 (1 → 1) fg-positive,
    # from 3 (1 → 255) invalid; (1,0) from column 1 (0 → 0) bg-positive
    right = d[(0, 1)]
    assert (neg[right, 0, 0], fg[right, 0, 1], bg[right, 0, 1]) == (1, 1, 0)
    assert neg[right, 0, 2] == fg[right, 0, 2] == bg[right, 0, 2] == 0
    assert bg[d[(1, 0)], 0, 0] == 1
    assert not ((bg + fg + neg) > 1).any()


def two_regions(h=24, w=24):
    label = torch.zeros(1, h, w, dtype=torch.uint8)
    label[:, :, w // 2:] = 1
    return label


def test_loss_zero_boundary_makes_the_positive_loss_vanish():
    pairs = pair_set(10)
    label = two_regions()
    aff = path_affinity(torch.zeros(1, 24, 24), pairs)
    loss = affinity_loss(aff, *pair_labels(label, pairs))
    assert loss["bg_pos"] < 1e-4 and loss["fg_pos"] < 1e-4
    assert loss["neg"] > 10  # ...while every negative pair is called connected


def test_loss_boundary_between_regions_makes_the_negative_loss_vanish():
    pairs = pair_set(10)
    label = two_regions()
    b = torch.zeros(1, 24, 24)
    b[..., 12] = 1.0  # the first column of the second region
    loss = affinity_loss(path_affinity(b, pairs), *pair_labels(label, pairs))
    assert loss["neg"] < 1e-4
    assert loss["bg_pos"] < 1e-4  # no background pair crosses it


def test_loss_gradient_reaches_the_boundary_only_through_paths():
    pairs = pair_set(10)
    b = torch.full((1, 24, 24), 0.5, requires_grad=True)
    affinity_loss(path_affinity(b, pairs), *pair_labels(two_regions(), pairs))["loss"].backward()
    assert b.grad is not None and b.grad.abs().sum() > 0


def reference_dense_walk(seeds, edge, radius=5, beta=10, exp_times=8):
    """algorithms.md §7.3 as the reference does it: pad by the radius (right, left, bottom) with 1, dense
    symmetric A over the padded grid, crop it to the image, A^β, normalise columns, square exp_times times."""
    h, w = edge.shape
    m = radius - 1
    hp, wp = h + radius, w + 2 * radius
    padded = F.pad(edge[None, None].double(), (radius, radius, 0, radius), value=1.0)[0, 0]
    idx = torch.arange(hp * wp).reshape(hp, wp)
    a = torch.eye(hp * wp, dtype=torch.float64)
    src = shifted(idx, 0, 0, m).reshape(-1)
    for (dy, dx), p in zip(directions(radius), pair_set(radius).paths, strict=True):
        aff = 1 - torch.stack([shifted(padded, y, x, m) for y, x in p]).amax(0).reshape(-1)
        dst = shifted(idx, dy, dx, m).reshape(-1)
        a[src, dst] = aff
        a[dst, src] = aff
    a = a.view(hp, wp, hp, wp)[:-radius, radius:-radius, :-radius, radius:-radius].reshape(h * w, h * w)
    t = a.pow(beta)
    t = t / t.sum(0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    x = (seeds.double() * (1 - edge.double())).reshape(len(seeds), h * w)
    return (x @ t).reshape(len(seeds), h, w)


def test_sparse_walk_equals_the_references_dense_squarings():
    g = torch.Generator().manual_seed(0)
    h, w = 13, 17
    edge = torch.rand(h, w, generator=g) ** 3
    edge[6, :] = 0.9  # a strong horizontal boundary
    seeds = torch.rand(2, h, w, generator=g)
    ref = reference_dense_walk(seeds, edge)
    torch.testing.assert_close(propagate(seeds.double(), edge.double()), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(propagate(seeds, edge).double(), ref, rtol=1e-3, atol=1e-5)  # float32 over 256 steps


def test_transition_columns_sum_to_one():
    edge = torch.rand(9, 11, generator=torch.Generator().manual_seed(1))
    t = transition_transposed(edge).to_dense()  # Tᵀ: rows of Tᵀ are the columns of T
    torch.testing.assert_close(t.sum(1), torch.ones(99))
    assert (t >= 0).all()


def test_seed_inside_a_closed_boundary_stays_inside():
    h, w = 20, 20
    edge = torch.zeros(h, w)
    edge[5, 5:15] = edge[14, 5:15] = edge[5:15, 5] = edge[5:15, 14] = 1.0  # a closed square ring
    seeds = torch.zeros(1, h, w)
    seeds[0, 9:11, 9:11] = 1.0
    rw = propagate(seeds, edge)[0]
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[6:14, 6:14] = True
    assert rw[~inside].abs().max() < 1e-6
    assert rw[inside].min() > 0.1 * rw.max()  # and it has spread over the inside


def test_constant_map_without_boundary_is_unchanged():
    seeds = torch.full((1, 12, 15), 0.7)
    rw = propagate(seeds, torch.zeros(12, 15))
    torch.testing.assert_close(rw, seeds)


def test_rw_label_background_threshold_and_keys():
    h4, w4 = 10, 10
    strided = np.zeros((1, h4, w4), np.float32)
    strided[0, :, :5] = 1.0
    edge = torch.zeros(h4, w4)
    edge[:, 5] = 1.0  # the object's edge
    label = rw_label(strided, np.array([6]), edge, (38, 40), bg_threshold=0.25)
    assert label.shape == (38, 40) and set(np.unique(label)) == {0, 7}
    assert (label[:, :16] == 7).all() and (label[:, 24:] == 0).all()
    assert (rw_label(np.zeros((0, h4, w4), np.float32), np.array([], np.int64), edge, (38, 40), 0.25) == 0).all()


def test_rw_label_of_seeds_that_are_all_zero_is_background_not_irns_first_class():
    """A deviation from IRN (docs/faithfulness.md): when the present classes' seeds are zero everywhere, IRN's
    `rw_up / torch.max(rw_up)` is 0 / 0 and the argmax over [background, NaN, …] picks the first class, labelling
    the whole image with it. Here the image is background: there is no evidence for any class."""
    edge = torch.zeros(8, 9)
    zeros = np.zeros((2, 8, 9), np.float32)
    label = rw_label(zeros, np.array([2, 11]), edge, (30, 33), bg_threshold=0.25)
    assert label.shape == (30, 33) and (label == 0).all()
    rw = propagate(torch.from_numpy(zeros), edge)  # IRN's own arithmetic on the same walk, for the record
    up = rw / rw.max()
    irn = torch.cat([torch.full_like(up[:1], 0.25), up]).argmax(0)
    assert torch.isnan(up).all() and (irn == 1).all()


def test_walk_label_is_its_maps_thresholded_as_seeds_are():
    """scripts/walk_threshold.py sweeps the walk's background threshold over `rw_maps` with eval_cam's sweep:
    that is exact only if the walk's label is those maps thresholded like seeds (ties to the background)."""
    from wsss.metrics import threshold_cams
    from wsss.random_walk import rw_maps

    g = torch.Generator().manual_seed(3)
    strided = torch.rand(2, 9, 11, generator=g).numpy()
    edge = torch.rand(9, 11, generator=g) * 0.5
    keys = np.array([4, 9])
    maps = rw_maps(strided, edge, (33, 41)).numpy()
    for t in (0.1, 0.3, 0.62, 0.9):
        np.testing.assert_array_equal(rw_label(strided, keys, edge, (33, 41), t), threshold_cams(maps, keys, t))


MEMORY_PROBE = """
import resource, torch
from wsss.random_walk import rw_label
import numpy as np
torch.set_num_threads(1)
rw_label(np.random.rand(2, 20, 20).astype(np.float32), np.array([0, 1]), torch.rand(20, 20), (80, 80), 0.25)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
h, w = 125, 125  # a 500 × 500 photo: n = 15,625; the reference's dense A alone is 931 MiB in float32
rw_label(np.random.rand(20, h, w).astype(np.float32), np.arange(20), torch.rand(h, w) ** 4, (500, 500), 0.25)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_memory_of_the_walk_on_a_large_photo_is_bounded():
    """A 500×500 photo with all 20 classes present: the walk's peak adds < 300 MB to the process
    (`scripts/bench_parts.py walk`: ~120 MB; the reference's dense transition alone would be 931 MiB)."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 300


@pytest.mark.parametrize("radius", [5, 10])
def test_affinity_matrix_is_symmetric_with_unit_diagonal(radius):
    from wsss.random_walk import affinity_matrix

    edge = torch.rand(15, 23, generator=torch.Generator().manual_seed(2))
    rows, cols, vals = affinity_matrix(edge, radius)
    a = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (345, 345), check_invariants=True).to_dense()
    torch.testing.assert_close(a, a.T)
    torch.testing.assert_close(a.diagonal(), torch.ones(345))
    assert len(vals) == len(set(zip(rows.tolist(), cols.tolist(), strict=True)))  # no pair twice
