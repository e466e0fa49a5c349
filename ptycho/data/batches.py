"""From a dataset to the groups and batches a job trains on: one data layer for both backends.

:func:`prepare_job_data` is step 1 of every phase job (``ptycho.tf.workflow``, and
``ptycho.torch.workflow``): a spatially compact subset of ``n_images`` train positions
(``grouping.compact_subset``), ``n_groups`` groups among them, inference groups with every
test position as a seed, the subset's intensity scale s (``normalization``) and the canvas
side from the actual offsets of all groups (``stitching.canvas_size_for``). Without ground
truth (no ``Y``) the MAE and real-space loss weights are set to 0.

Scaling (docs/design.md §4, ``ptycho.data.normalization``): for groups with scan indices ``nn_indices``
(B, C) the model input is ``X = s * A_file`` gathered to (B, N, N, C) and the labels are
``X**2`` (photons), so inputs and labels carry the same intensity scale s.

The validation split and the shuffled order of every epoch depend on the seed alone, so the
Keras model and its PyTorch twin see the same groups in the same batches: with the same
initial weights (``ptycho.architecture``) their runs stay side by side. Nothing here imports
TensorFlow or PyTorch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ptycho import architecture, stitching
from ptycho.data import grouping, normalization
from ptycho.data.contract import PtychoData
from ptycho.data.grouping import Groups
from ptycho.spec import GroupingSpec, ModelSpec

DEFAULT_NPHOTONS = 1e9


@dataclass(frozen=True, eq=False)
class GroupedData:
    """Model-ready arrays for B groups of C = gridsize**2 scan positions.

    diffraction (B, N, N, C) float32 = s * A_file; coords_relative (B, 1, 2, C) float32 pixels;
    object (B, N, N, C) complex64 true patches, or None (no ground truth, or not gathered).
    The labels, ``intensity`` = diffraction**2 (photons), are computed when asked for.
    """

    diffraction: np.ndarray
    coords_relative: np.ndarray
    object: np.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def intensity(self) -> np.ndarray:
        """(B, N, N, C) float32 intensity labels."""
        return normalization.intensity_labels(self.diffraction)

    def inputs(self) -> dict[str, np.ndarray]:
        return {"diffraction": self.diffraction, "coords_relative": self.coords_relative}

    def targets(self) -> dict[str, np.ndarray]:
        targets = {"intensity": self.intensity}
        if self.object is not None:
            targets["object"] = self.object
        return targets

    def take(self, index: slice | np.ndarray) -> "GroupedData":
        obj = None if self.object is None else self.object[index]
        return GroupedData(self.diffraction[index], self.coords_relative[index], obj)


def group_data(data: PtychoData, groups: Groups, intensity_scale: float, with_object: bool = True) -> GroupedData:
    """Gather ``data`` into groups: channel c of group b is scan image ``groups.nn_indices[b, c]``.

    with_object: also gather the true patches ``Y`` (when the data has them).
    """
    index = np.asarray(groups.nn_indices)
    if index.ndim != 2 or index.size == 0 or index.min() < 0 or index.max() >= data.n_images:
        raise ValueError(
            f"group_data: nn_indices {index.shape} must be (B, C) indices into {data.n_images} images"
        )
    diffraction = normalization.scale_inputs(_to_channels(data.diffraction[index]), intensity_scale)
    obj = None if data.Y is None or not with_object else _to_channels(data.Y[index]).astype(np.complex64)
    return GroupedData(diffraction, np.asarray(groups.coords_relative, np.float32), obj)


def _to_channels(stacked: np.ndarray) -> np.ndarray:
    """(B, C, N, N) -> (B, N, N, C)."""
    return np.ascontiguousarray(np.transpose(stacked, (0, 2, 3, 1)))


def prepare_job_data(train_data: PtychoData, test_data: PtychoData, spec: GroupingSpec,
                     model_spec: ModelSpec, nphotons: float = DEFAULT_NPHOTONS):
    """Step 1 of the job: (resolved ModelSpec, train GroupedData, test GroupedData, test Groups).

    The resolved spec carries the subset's intensity scale, its amplitude RMS (the encoder's
    input normalisation), the constant object amplitude it implies (where the network starts, as
    ``architecture.amplitude_start``'s a0 and amplitude_scale)
    and the canvas side that holds every train and test group's offsets.
    """
    _check_consistent(train_data, test_data, spec, model_spec)
    if spec.n_images is not None:
        train_data = train_data.subset(
            grouping.compact_subset(train_data.xcoords, train_data.ycoords, spec.n_images, spec.seed))
    train_groups = grouping.group_positions(
        train_data.xcoords, train_data.ycoords, spec.gridsize, spec.neighbor_count,
        spec.groups_for(train_data.n_images), spec.seed)
    test_groups = stitching.inference_groups(test_data, spec.gridsize, spec.neighbor_count, spec.seed)
    scale = normalization.dataset_intensity_scale(train_data.diffraction, nphotons)
    initial_amplitude, amplitude_scale = architecture.amplitude_start(
        train_data.diffraction, architecture.prepare_probe(train_data.probe, model_spec.N, model_spec.probe_mask))
    resolved = dataclasses.replace(
        model_spec, intensity_scale=scale, encoder_input_rms=normalization.amplitude_rms(train_data.diffraction),
        initial_amplitude=initial_amplitude, amplitude_scale=amplitude_scale,
        canvas_size=stitching.canvas_size_for(model_spec.N, train_groups.coords_relative,
                                              test_groups.coords_relative),
    )
    if train_data.Y is None:
        resolved = dataclasses.replace(resolved, mae_weight=0.0, realspace_weight=0.0)
    needs_truth = resolved.mae_weight > 0 or resolved.realspace_weight > 0
    return (resolved, group_data(train_data, train_groups, scale, with_object=needs_truth),
            group_data(test_data, test_groups, scale, with_object=False), test_groups)


def _check_consistent(train_data, test_data, spec: GroupingSpec, model_spec: ModelSpec) -> None:
    for name, value in (("train_data", train_data), ("test_data", test_data)):
        if not isinstance(value, PtychoData):
            raise TypeError(f"run_phase_job: {name} must be a PtychoData; got {type(value).__name__}")
    if not isinstance(spec, GroupingSpec) or not isinstance(model_spec, ModelSpec):
        raise TypeError("run_phase_job: grouping must be a GroupingSpec and model_spec a ModelSpec")
    if spec.gridsize != model_spec.gridsize:
        raise ValueError(f"grouping.gridsize={spec.gridsize} differs from model_spec.gridsize={model_spec.gridsize}")
    for name, data in (("train", train_data), ("test", test_data)):
        if data.N != model_spec.N:
            raise ValueError(f"{name} data has N={data.N} but model_spec.N={model_spec.N}")


def split_validation(data, validation_split: float):
    """(train, validation or None) of grouped ``data`` (anything with ``n_groups`` and ``take``).

    The last ``n - ceil(n * (1 - split))`` groups are held out (Keras' rule); at least one
    group always trains.
    """
    n_train = max(1, min(math.ceil(data.n_groups * (1.0 - validation_split)), data.n_groups))
    if n_train == data.n_groups:
        return data, None
    return data.take(slice(0, n_train)), data.take(slice(n_train, None))


def epoch_order(n_groups: int, seed: int, epoch: int) -> np.ndarray:
    """(n_groups,) int64: the shuffled order of the training groups in ``epoch`` (0-based).

    A fresh permutation per epoch from a generator seeded with (seed, epoch), so any epoch's
    order is known without drawing the ones before it.
    """
    return np.random.default_rng((seed, epoch)).permutation(n_groups)


def n_batches(n_groups: int, batch_size: int) -> int:
    """Batches per epoch; the last batch may be smaller."""
    return math.ceil(n_groups / batch_size)
