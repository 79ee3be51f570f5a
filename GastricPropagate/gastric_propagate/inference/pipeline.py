"""One painted axial slice -> 3D mask: checks and crop, proposer propagation, refinement, paste-back, vote, confidence.

CONTRACT (used by the CLI, the Slicer Logic and the evaluation; keep it stable):

    result = segment_volume(image, spacing_xyz, annotation, options=PropagationOptions(), device="auto",
                            segmenter=None, progress=None, should_stop=None, backend="auto")

    image        np.ndarray (z, y, x), CT in Hounsfield units (any integer or float dtype)
    spacing_xyz  (sx, sy, sz) in mm, as SimpleITK and Slicer report it
    annotation   np.ndarray (z, y, x), non-zero on the painted slice(s)
    progress     callable(done: int, total: int) or None, called after each slice
    should_stop  callable() -> bool or None; when it returns True, Cancelled is raised
    returns      SegmentationResult (mask uint8 (z, y, x) on the image's grid, ...)
    raises       errors.InputError / errors.WeightsError / errors.Cancelled

The networks run under ONNX Runtime or PyTorch (``Segmenter``'s ``backend``, chosen in ``backends``); this module
imports neither until a ``Segmenter`` loads them, so an ONNX Runtime run never loads torch.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy import ndimage

from gastric_propagate.data.annotation import describe_slices, painted_slices
from gastric_propagate.inference.advice import (Advice, cut_at_reach_advice, ended_while_followed_advice,
                                               larger_neighbour_advice, painted_at_volume_edge_advice,
                                               result_at_volume_edge_advice, separate_regions_advice,
                                               unfilled_outline_advice)
from gastric_propagate.inference.backends import checkpoint_paths, choose_backend, resolve_device
from gastric_propagate.inference.checkpoints import (PROMPT_CHANNELS, Checkpoint, load_checkpoint,
                                                     mixed_training_warning)
from gastric_propagate.errors import Cancelled, InputError, WeightsError
from gastric_propagate.inference.onnx_networks import load_onnx, onnx_path
from gastric_propagate.inference.options import (NOT_LARGEST_REGISTRATION_REACH, ONNX_BACKENDS, TORCH_BACKENDS,
                                                 slices_within)
from gastric_propagate.inference.options import PropagationOptions  # noqa: F401 - part of this module's contract
from gastric_propagate.inference.preprocessing import (CropGrid, Preprocessing, crop_grid_for, mask_from_crop,
                                                       normalise, prompt_centre, to_crop, with_working_slices)
from gastric_propagate.inference.confidence import slice_confidence
from gastric_propagate.inference.masks import in_plane_box
from gastric_propagate.inference import consensus as vote
from gastric_propagate.inference.registration import WalkMemo
from gastric_propagate.inference.propagation import InChunks, PropagationOutput, StopRule, propagate
from gastric_propagate.inference.refinement import refine
from gastric_propagate.inference.result import SegmentationResult
from gastric_propagate.data.validation import check_annotation, check_image, check_spacing

if TYPE_CHECKING:
    from gastric_propagate.inference.networks import UNet2D

logger = logging.getLogger(__name__)

# When the painted slice is not the largest cross-section: the tumour may be wider than the painted outline,
# and a slice larger than the painted one is no sign of a leak.
NOT_LARGEST_EXTRA_MARGIN_MM = 30.0
ANY_PAINTED_SLICE_RULE = StopRule(runaway_factor=float("inf"), max_growth=float("inf"), max_extent_diameters=4.0)
# Confidence factor of a slice whose leak was cut back to the previous outline (flags it for review).
CUT_BACK_CONFIDENCE_FACTOR = 0.4
# The result's cross-section on the slice where the vote's reach ended it, as a share of the painted one, from which
# the reader is told the tumour may go on (``advice.CUT_AT_REACH``; rules.md, CR, stop 51: 7 of its 9 firings on the
# dev cases right).
CUT_AT_REACH_SHARE = 0.3
# ... or the registration's cross-section there, which follows the image where the networks shrank away and the copy
# tapers to its end (rules.md, CR2, stop 52: 3 of its 4 new firings on the dev cases right).
CUT_AT_REACH_REGISTRATION_SHARE = 0.5
# The registration's cross-section on the result's last slice, where the result ended inside the vote's reach, from
# which the reader is told the tumour may go on (``advice.ENDED_WHILE_FOLLOWED``; rules.md, CE2, stop 52: 48 of its
# 57 firings on the dev cases right).
ENDED_WHILE_FOLLOWED_SHARE = 0.5


class Segmenter:
    """The two trained stages, loaded once and reused for many volumes.

    Args:
        proposer_path: proposer checkpoint; the bundled one when None.
        refiner_path: refiner checkpoint; the bundled one when None.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        backend: how the networks run (``backends.choose_backend``): "auto" (PyTorch where an NVIDIA driver is
            visible, else ONNX Runtime where it can run), "torch" (PyTorch, on ``device``), "torch-bf16" (the same
            with the networks in bfloat16), "onnx" (ONNX Runtime on the CPU, from the ``.onnx`` files beside the
            checkpoints; torch is never imported) or "onnx-int8" (the same with their int8 copies, ``.int8.onnx``).
    """

    def __init__(self, proposer_path=None, refiner_path=None, device: str = "auto", backend: str = "auto"):
        paths = checkpoint_paths(proposer_path, refiner_path)
        self.backend = choose_backend(backend, device, proposer_path, refiner_path)
        loaded, unloadable = None, None
        if self.backend in ONNX_BACKENDS:
            self.device, precision = "cpu", ONNX_BACKENDS[self.backend]
            try:
                loaded = {stage: load_onnx(onnx_path(path, precision), stage=stage, precision=precision)
                          for stage, path in paths.items()}
            except (WeightsError, ImportError) as error:  # ImportError: installed, but it does not load (a DLL)
                problem = error
                if isinstance(error, ImportError):
                    problem = unloadable = _onnxruntime_unloadable(error)
                if backend in ONNX_BACKENDS:
                    raise problem from None
                logger.warning("%s Running the networks with PyTorch instead.", problem)
                self.backend = "torch"
        if loaded is None:
            try:
                self.device = resolve_device(device)
            except InputError:
                if unloadable is None:
                    raise
                raise unloadable from None  # without PyTorch either: the onnxruntime to mend is what the reader needs
            loaded = {stage: load_checkpoint(path, stage=stage, device=self.device) for stage, path in paths.items()}
        self.proposer, self.refiner = loaded["proposer"], loaded["refiner"]
        self._walks = WalkMemo()
        self._checked_image = None  # the name (``image_key``) of the CT the last run checked
        if self.refiner.preprocessing != self.proposer.preprocessing:
            raise WeightsError(
                f"The proposer ({self.proposer.path}) and refiner ({self.refiner.path}) were trained with "
                "different preprocessing; use a pair produced by one 'gastric-propagate train' run.")
        # one of the two given alone is the command line's warning (``cli._warn_of_mixed_weights``), before the run
        mixed = mixed_training_warning(self.proposer, self.refiner) if proposer_path and refiner_path else None
        if mixed:
            logger.warning(mixed)
        self._prepare_networks()

    @property
    def device_label(self) -> str:
        """Where and how the networks run, as reports and the panel name it: "cpu", "cuda:0", or with the precision
        when it is not float32 ("cpu (int8)", "cpu (bfloat16)"): such networks give slightly different masks."""
        precision = {**ONNX_BACKENDS, **TORCH_BACKENDS}.get(self.backend, "float32")
        return str(self.device) if precision == "float32" else f"{self.device} ({precision})"

    def _prepare_networks(self) -> None:
        """The networks as they run (``propagation.NetworkRunner``): an ONNX stage runs itself; a PyTorch one with
        its batch norms folded, channels-last (``networks.inference_copy``)."""
        if self.backend not in TORCH_BACKENDS:
            self._proposer, self._refiner = InChunks(self.proposer), InChunks(self.refiner)
            return
        from gastric_propagate.inference.networks import TorchRunner, inference_copy

        precision = TORCH_BACKENDS[self.backend]
        self._proposer = InChunks(TorchRunner(inference_copy(self.proposer.network), self.device, precision))
        self._refiner = InChunks(TorchRunner(inference_copy(self.refiner.network), self.device, precision))

    @classmethod
    def from_networks(cls, proposer: UNet2D, refiner: UNet2D, preprocessing: Preprocessing = Preprocessing(),
                      device: str = "cpu") -> "Segmenter":
        """A segmenter around in-memory PyTorch networks (training-time validation, tests with tiny networks)."""
        segmenter = cls.__new__(cls)
        segmenter.device, segmenter.backend = resolve_device(device), "torch"
        segmenter.proposer = Checkpoint("proposer", proposer.to(segmenter.device).eval(), preprocessing, {})
        segmenter.refiner = Checkpoint("refiner", refiner.to(segmenter.device).eval(), preprocessing, {})
        segmenter._walks = WalkMemo()
        segmenter._checked_image = None
        segmenter._prepare_networks()
        return segmenter

    def segment(self, image: np.ndarray, spacing_xyz, annotation: np.ndarray,
                options: PropagationOptions = PropagationOptions(), *,
                progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None, image_key=None) -> SegmentationResult:
        """Segments one volume; see the module docstring for the contract. ``image_key``: a name for the image's
        voxels and spacing that the caller guarantees to change whenever they do (the worker: its CT file's identity
        on disk); the vote's registration walks of earlier runs with the same name are then served again where
        nothing they depended on changed (``registration.WalkMemo``). None: every walk is walked."""
        laps = _Laps()
        # A CT served again under its name (the worker's kept CT) was checked when it was first seen.
        run = self._prepare(image, spacing_xyz, annotation, options,
                            image_checked=image_key is not None and image_key == self._checked_image)
        self._checked_image = image_key
        laps("prepare")
        # The vote's registration needs only the CT and the painted slices: it runs in a thread while the networks
        # run (SimpleITK and ONNX Runtime release the GIL), and the vote waits for it.
        pool, failed = ThreadPoolExecutor(max_workers=1), threading.Event()
        try:
            memo = None if image_key is None else (self._walks, image_key)
            chains = pool.submit(_register, run, memo, failed.is_set) if options.use_consensus else None
            coarse = self._propose(run, progress, should_stop)
            laps("proposer")
            final = self._refine(run, coarse, should_stop)
            laps("refiner")
            network_mask, proposer_mask = _paste_back(run, coarse, final)
            laps("paste_back")
            mask, opinions, advice = _vote(run, network_mask, should_stop, chains)
            laps("consensus")
        except BaseException:
            # Cancelled or failed: the registration ends its walks at their next step, and is waited for; the CT it
            # reads may be freed once this returns (a view of a SimpleITK image the caller drops).
            failed.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        confidence, cut_back = _confidence(run, coarse, mask, opinions)
        found_when_turned = _on_working_slices(confidence, run.grid, coarse.found_when_turned)
        laps("confidence")
        return SegmentationResult(
            mask=mask, proposer_mask=proposer_mask,
            slice_confidence=confidence, anchor_slices=list(run.anchor_slices),
            stop_reasons=coarse.stop_reasons, seconds=laps.total(), device=self.device_label, timings=laps.seconds,
            network_mask=network_mask, consensus=options.use_consensus, cut_back=cut_back, advice=advice,
            found_when_turned=found_when_turned)

    def _prepare(self, image: np.ndarray, spacing_xyz, annotation: np.ndarray, options: PropagationOptions, *,
                 image_checked: bool = False) -> _Run:
        """Checks the inputs (the CT unless ``image_checked``), works out the slice limits and crops the volume to what
        the networks see."""
        spacing_xyz = tuple(float(s) for s in spacing_xyz)
        check_spacing(spacing_xyz)
        if not image_checked:
            check_image(image)
        anchor_slices = check_annotation(annotation, image.shape, spacing_xyz, keyframes=options.keyframes)
        limits = _slice_limits(options, anchor_slices, image.shape[0], spacing_xyz[2])
        painted = annotation > 0
        reach_factor = vote.REACH_FACTOR if options.vote_reach is None else options.vote_reach  # checked: above 0
        # Not the largest cross-section: the tumour may grow beyond the outline, which the registration can follow.
        window_factor = reach_factor if options.painted_is_largest else max(reach_factor,
                                                                            NOT_LARGEST_REGISTRATION_REACH)
        anchor_masks = {k: painted[k] for k in anchor_slices}
        limits, reach_limited = _vote_limits(options, anchor_masks, spacing_xyz, limits, window_factor)
        grid, crop, anchors, working_limits = self._crop(image, painted, anchor_slices, spacing_xyz, options, limits)
        return _Run(image=image, spacing_xyz=spacing_xyz, options=options, painted=painted, anchor_slices=anchor_slices,
                    anchor_masks=anchor_masks, limits=limits, reach_factor=reach_factor, window_factor=window_factor,
                    reach_limited=reach_limited, grid=grid, crop=crop, anchors=anchors, working_limits=working_limits)

    def _crop(self, image: np.ndarray, painted: np.ndarray, anchor_slices: list[int], spacing_xyz,
              options: PropagationOptions,
              limits: tuple[int, int]) -> tuple[CropGrid, np.ndarray, dict[int, np.ndarray], tuple[int, int]]:
        """The crop grid, the normalised crop, the anchors on it (working slice -> cross-section) and the slice limits
        on its working slices."""
        prep = self.proposer.preprocessing
        grid = crop_grid_for(painted[anchor_slices], spacing_xyz, prep,
                             extra_margin_mm=0.0 if options.painted_is_largest else NOT_LARGEST_EXTRA_MARGIN_MM)
        grid = with_working_slices(grid, anchor_slices, image.shape[0], spacing_xyz[2], prep)
        centre = prompt_centre(image[anchor_slices], painted[anchor_slices])  # the painted slices: not the whole CT
        crop = normalise(to_crop(image, grid), prep, centre).astype(np.float32, copy=False)
        anchor_crop = to_crop(painted[anchor_slices].astype(np.float32), grid.in_plane(), default_value=0.0) > 0.5
        _check_anchors_survive(anchor_crop, anchor_slices, prep.pixel_spacing_mm)
        anchors = {grid.working_index(k): anchor_crop[i] for i, k in enumerate(anchor_slices)}
        # The slice limits on the working slices: the working slices that enclose them, so that on thin slices (working
        # slices 2 mm apart) a limit between two of them is reached; the pasted-back mask is cut to the limits.
        low, high = limits
        working_limits = (max(0, int(np.floor((low - grid.origin_z) / grid.step_z + 1e-6))),
                          min(crop.shape[0] - 1, int(np.ceil((high - grid.origin_z) / grid.step_z - 1e-6))))
        return grid, crop, anchors, working_limits

    def _propose(self, run: _Run, progress, should_stop) -> PropagationOutput:
        """The proposer's chains from the anchors, slice by slice, up and down."""
        grid, pixel_mm = run.grid, self.proposer.preprocessing.pixel_spacing_mm
        rule = StopRule() if run.options.painted_is_largest else ANY_PAINTED_SLICE_RULE
        coarse = propagate(self._proposer, run.crop, run.anchors, limits=run.working_limits,
                           pixel_area_mm2=pixel_mm ** 2, pixel_mm=pixel_mm, rule=rule,
                           slice_mm=grid.step_z * run.spacing_xyz[2],
                           slice_name=lambda i: int(round(grid.slice_position(i))),
                           progress=progress, should_stop=should_stop,
                           prompt=self.proposer.in_channels == PROMPT_CHANNELS)
        for direction, limit in zip(("down", "up"), run.limits):  # the CT's limit, not the working slice past it
            reason = coarse.stop_reasons[direction]
            # On thin slices a limit's enclosing working slice can be the crop's first or last: the CT goes on.
            beside_edge = reason == "reached the edge of the volume" and limit not in (0, run.image.shape[0] - 1)
            if reason.startswith("reached the slice limit") or beside_edge:
                coarse.stop_reasons[direction] = f"reached the slice limit ({limit})"
        for direction, limit in run.reach_limited.items():
            if coarse.stop_reasons[direction].startswith("reached the slice limit"):
                coarse.stop_reasons[direction] = (
                    f"stopped at slice {limit}: {run.window_factor:g} painted diameters from the outermost painted "
                    "slice, as far as the vote with registration and the copy reaches" + (
                        "" if run.options.use_consensus else " (the networks alone stop there too)"))
        return coarse

    def _refine(self, run: _Run, coarse: PropagationOutput, should_stop) -> np.ndarray:
        """The refiner's probabilities on the crop (the proposer's when it is off), anchors kept as painted and
        regions apart from them dropped. Without the refiner the anchors are written into the proposer's
        probabilities themselves, and so reach its pasted-back mask too."""
        final = coarse.probabilities
        if run.options.use_refiner:
            _stop_if_asked(should_stop)
            # The anchors are written over the refined slices below: the refiner skips them.
            final = refine(self._refiner, run.crop, coarse.probabilities,
                           [k for k in coarse.visited if k not in run.anchors])
        for k, anchor in run.anchors.items():
            final[k] = anchor
        return _keep_connected_to_anchors(final, run.anchors)


@dataclass
class _Run:
    """One run's checked inputs, its limits, and the crop the networks see."""

    image: np.ndarray
    spacing_xyz: tuple[float, float, float]
    options: PropagationOptions
    painted: np.ndarray  # bool (z, y, x)
    anchor_slices: list[int]
    anchor_masks: dict[int, np.ndarray]  # painted slice -> its cross-section
    limits: tuple[int, int]  # the axial range the result may occupy, narrowed to the vote's reach
    reach_factor: float  # how far the vote reaches, in painted diameters
    window_factor: float  # how far the registration reaches (further when the painted slice is not the largest)
    reach_limited: dict[str, int]  # direction -> the slice where the vote's reach, not a user's limit, stops
    grid: CropGrid
    crop: np.ndarray  # normalised, float32
    anchors: dict[int, np.ndarray]  # working slice -> painted cross-section on the crop
    working_limits: tuple[int, int]  # ``limits`` on the working slices


class _Laps:
    """Wall time of each stage of a run, in the order they ran."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage], self._last = now - self._last, now

    def total(self) -> float:
        return self._last - self.started


def _vote_limits(options: PropagationOptions, anchor_masks: dict[int, np.ndarray], spacing_xyz,
                 limits: tuple[int, int], window_factor: float) -> tuple[tuple[int, int], dict[str, int]]:
    """The slice limits narrowed to the vote's window (the networks need not go where no voxel can win the vote),
    and direction -> the slice where that window, not a user's limit, stops them. The networks alone from a painted
    largest cross-section stop there too: let run on, their chains went on along z into same-density tissue (stop
    45's NA and stop 47's NA2, judged on real and synthetic dev cases: docs/evaluation/real-ct-training/rules.md)."""
    low, high = limits
    reach_limited = {}
    if options.use_consensus or options.painted_is_largest:
        first, last = vote.vote_window(anchor_masks, spacing_xyz, extent_factor=window_factor)
        if first > low:
            low = reach_limited["down"] = first
        if last < high:
            high = reach_limited["up"] = last
    return (low, high), reach_limited


def _paste_back(run: _Run, coarse: PropagationOutput, final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The networks' mask and the proposer's on the image's grid, the painted slices as drawn."""
    visited = coarse.visited
    window = slice(visited[0], visited[-1] + 1)
    mask = mask_from_crop(final[window], run.grid, run.image.shape, window)
    coarse_kept = _keep_connected_to_anchors(coarse.probabilities, run.anchors)
    proposer_mask = mask_from_crop(coarse_kept[window], run.grid, run.image.shape, window)
    # A working slice just past a limit may put voxels beyond it: those few slices are cleared (only those: writing
    # zeros over the whole untouched grid would make the system hold it, about 80 MB at 512 x 512 x 300).
    low, high = run.limits
    pasted = _ct_span(run.grid, visited)
    for target in (mask, proposer_mask):
        target[max(0, pasted[0]):max(0, low)] = 0
        target[high + 1:max(high + 1, pasted[1] + 1)] = 0
        target[run.anchor_slices] = run.painted[run.anchor_slices]
    return mask, proposer_mask


def _ct_span(grid: CropGrid, visited: list[int]) -> tuple[int, int]:
    """The first and last CT slice (unclipped) between the first and last working slices the networks visited."""
    return (int(np.ceil(grid.slice_position(visited[0]) - 1e-6)),
            int(np.floor(grid.slice_position(visited[-1]) + 1e-6)))


def _register(run: _Run, memo, should_stop: Callable[[], bool]) -> dict[int, np.ndarray]:
    """The vote's registration from each anchor (``consensus.register_anchors``)."""
    return vote.register_anchors(run.image, run.spacing_xyz, run.anchor_masks, extent_factor=run.reach_factor,
                                 registration_reach=run.window_factor, memo=memo, should_stop=should_stop)


def _vote(run: _Run, network_mask: np.ndarray, should_stop,
          chains: Future | None) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None, list[Advice]]:
    """The vote of the networks, registration (``chains``, started beside the networks) and the copied outline (the
    networks' mask when the vote is off), its opinions (None when off), and the advice on the painted slices."""
    options, depth = run.options, run.image.shape[0]
    mask, opinions, advice = network_mask, None, []
    if options.use_consensus:
        _stop_if_asked(should_stop)
        mask, opinions = vote.take_vote(network_mask, run.image, run.spacing_xyz, run.anchor_masks, run.limits,
                                        extent_factor=run.reach_factor, registration_reach=run.window_factor,
                                        taper=options.painted_is_largest, chains=chains.result())
        if options.painted_is_largest:
            advice = _painted_slice_advice(opinions[1], run.anchor_slices, run.painted, run.spacing_xyz)
    advice += [painted_at_volume_edge_advice(k, depth) for k in run.anchor_slices if k in (0, depth - 1)]
    advice += _ends_advice(run, mask, None if opinions is None else opinions[1])
    pixel_mm2 = run.spacing_xyz[0] * run.spacing_xyz[1]
    for k in run.anchor_slices:
        regions, count = ndimage.label(run.painted[k], structure=np.ones((3, 3)))
        if count > 1:
            areas = sorted((np.bincount(regions.ravel())[1:] * pixel_mm2).tolist(), reverse=True)
            advice.append(separate_regions_advice(k, areas))
        painted = run.painted[k] > 0
        held = np.count_nonzero(painted)
        enclosed = np.count_nonzero(ndimage.binary_fill_holes(painted) & ~painted)
        if enclosed > held:  # a small hole is a detail of the drawing; this is a ring
            advice.append(unfilled_outline_advice(k, held * pixel_mm2, enclosed * pixel_mm2))
    return mask, opinions, advice


def _ends_advice(run: _Run, mask: np.ndarray, registered: np.ndarray | None) -> list[Advice]:
    """Advice on each side where the tumour may go on beyond the result's last slice: the vote's reach (not a limit of
    the user's, nor the volume's edge) ended it while it still covers ``CUT_AT_REACH_SHARE`` of the outermost painted
    cross-section there, or the registration (``registered``, None without the vote) covers
    ``CUT_AT_REACH_REGISTRATION_SHARE`` of it; or it ended inside the reach, not on a painted slice, where the
    registration still covers ``ENDED_WHILE_FOLLOWED_SHARE`` of it."""
    tumour = painted_slices(mask)
    if not tumour:
        return []
    advice = []
    for direction, index in (("down", 0), ("up", -1)):
        end, anchor = tumour[index], run.anchor_slices[index]
        painted = max(1.0, float(run.anchor_masks[anchor].sum()))
        share = float(mask[end].sum()) / painted
        followed = 0.0 if registered is None else float((registered[end] > 0).sum()) / painted
        if end == run.reach_limited.get(direction):
            if share >= CUT_AT_REACH_SHARE:
                advice.append(cut_at_reach_advice(end, direction, anchor, share, run.window_factor))
            elif followed >= CUT_AT_REACH_REGISTRATION_SHARE:
                advice.append(cut_at_reach_advice(end, direction, anchor, share, run.window_factor,
                                                  registration_share=followed))
        # On an anchor the vote's registration opinion is the painting itself: no sign of anything beyond it.
        elif end != run.limits[index] and end not in run.anchor_masks and followed >= ENDED_WHILE_FOLLOWED_SHARE:
            advice.append(ended_while_followed_advice(end, direction, anchor, followed))
        # The scan ends there, not the tumour (a painted edge slice has advice of its own).
        if end == (0, len(mask) - 1)[index] and end not in run.anchor_masks and share >= CUT_AT_REACH_SHARE:
            advice.append(result_at_volume_edge_advice(end, share))
    return advice


def _on_working_slices(ct_slices, grid: CropGrid, working: list[int]) -> list[int]:
    """The CT slices (of ``ct_slices``) nearest to one of the ``working`` slices of the crop grid (on thin slices a
    CT slice halfway between two working slices goes with both)."""
    working = set(working)
    return [k for k in ct_slices if grid.nearest_working(k) & working]


def _confidence(run: _Run, coarse: PropagationOutput, mask: np.ndarray,
                opinions: tuple[np.ndarray, ...] | None) -> tuple[dict[int, float], list[int]]:
    """Each slice's confidence, from the networks' first to last slice (or the vote's, when it reaches further),
    and the slices cut back after a leak, whose confidence is lowered."""
    grid, visited, consensus = run.grid, coarse.visited, run.options.use_consensus
    first, last = _ct_span(grid, visited)
    if consensus:  # the vote may reach slices the networks did not
        tumour = painted_slices(mask)
        first, last = min(first, tumour[0]), max(last, tumour[-1])
    slices = range(max(run.limits[0], first), min(run.limits[1], last) + 1)
    # Both read each slice in the box that holds the anchors, and the result and every opinion on these slices, not
    # the whole 512 x 512 slice: nothing outside it counts.
    box = (slice(None),) + in_plane_box([mask, *(opinions or ())], slice(slices.start, slices.stop),
                                        run.anchor_masks.values())
    shares = None
    if consensus:
        # The copy is asked only where it can hold voxels: it reaches less far than the others when the painted slice
        # is not the largest, and its taper ends before the window's rounded last slice (an empty copy there made
        # every such slice's agreement 0, however well the networks and the registration agreed: stop 57's EDGE0).
        copy_reach = vote.vote_window(run.anchor_masks, run.spacing_xyz, extent_factor=run.reach_factor)
        held = painted_slices(opinions[2][box])
        if held:
            copy_reach = (max(copy_reach[0], held[0]), min(copy_reach[1], held[-1]))
        shares = vote.agreement(tuple(o[box] for o in opinions), slices, reaches=(None, None, copy_reach))
    confidence = slice_confidence(mask[box], list(run.anchor_slices), slices, run.spacing_xyz, agreement=shares)
    cut_back = _on_working_slices(confidence, grid, coarse.cut_back)
    for k in cut_back:  # a slice cut back after a leak is a guess at best: always worth a look
        confidence[k] = round(confidence[k] * CUT_BACK_CONFIDENCE_FACTOR, 4)
    return confidence, cut_back


def _stop_if_asked(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("Propagation was cancelled; nothing was written.")


def _painted_slice_advice(registered: np.ndarray, anchor_slices: list[int], painted: np.ndarray,
                          spacing_xyz: tuple[float, float, float]) -> list[Advice]:
    """Advice when the registration finds a cross-section well larger than the painted one next to it: the
    protocol's painted slice is then probably not the largest, and the size rules and the vote assumed it was."""
    if len(anchor_slices) != 1:  # after corrections, the anchors are what the reader chose
        return []
    k = anchor_slices[0]
    slice_index, ratio = vote.larger_neighbour(registered, k, painted[k], spacing_xyz)
    if ratio <= vote.LARGER_NEIGHBOUR_RATIO:
        return []
    return [larger_neighbour_advice(k, slice_index, ratio)]


def segment_volume(image: np.ndarray, spacing_xyz, annotation: np.ndarray, *,
                   options: PropagationOptions = PropagationOptions(), device: str = "auto",
                   segmenter: Segmenter | None = None, progress=None, should_stop=None,
                   backend: str = "auto") -> SegmentationResult:
    """One call from arrays to a 3D mask; loads the bundled weights unless a ``segmenter`` is given."""
    segmenter = segmenter or Segmenter(device=device, backend=backend)
    return segmenter.segment(image, spacing_xyz, annotation, options, progress=progress, should_stop=should_stop)


def _onnxruntime_unloadable(error: ImportError) -> InputError:
    """An onnxruntime that is installed but does not load, as the reader can mend it."""
    return InputError(f"ONNX Runtime, which runs the networks on the CPU, is installed but cannot be loaded ({error}). "
                      "On Windows this is most often a missing or old Microsoft Visual C++ Redistributable: install "
                      "the latest (x64) from Microsoft and restart; otherwise reinstall onnxruntime (Slicer: "
                      "slicer.util.pip_install('--force-reinstall onnxruntime') in the Python console).")


def _slice_limits(options: PropagationOptions, anchors: list[int], depth: int, slice_mm: float) -> tuple[int, int]:
    """The inclusive axial range the result may occupy, from the options; anchors must lie inside it."""
    low = 0 if options.min_slice is None else max(0, int(options.min_slice))
    high = depth - 1 if options.max_slice is None else min(depth - 1, int(options.max_slice))
    if options.max_distance_mm is not None:  # PropagationOptions checked it: finite, 0 or more
        reach = slices_within(options.max_distance_mm, slice_mm)
        low, high = max(low, anchors[0] - reach), min(high, anchors[-1] + reach)
    if low > high:
        raise InputError(f"The slice limits leave no slice (from {low} to {high}). Widen them.")
    outside = [k for k in anchors if not low <= k <= high]
    if outside:
        raise InputError(f"Painted slice(s) {outside} lie outside the slice limits {low}-{high}. Widen the limits "
                         "so that they include every painted slice.")
    return low, high


def _check_anchors_survive(anchor_crop: np.ndarray, anchor_slices: list[int], pixel_mm: float) -> None:
    """InputError when a painted slice leaves nothing on the networks' grid: a stroke or an outline one voxel wide
    (e.g. a line drawn in a sagittal view), not a filled cross-section."""
    lost = [k for k, anchor in zip(anchor_slices, anchor_crop) if not anchor.any()]
    if lost:
        raise InputError(
            f"The painted region on axial slice(s) {describe_slices(lost)} is a line or an outline too thin to be a "
            f"cross-section: on the networks' {pixel_mm:g} mm grid nothing of it is left. Paint the tumour's whole "
            "cross-section, filled (a brush wider than one voxel, or fill the outline), on an axial slice, then run "
            "again.")


def _keep_connected_to_anchors(probabilities: np.ndarray, anchors: dict[int, np.ndarray]) -> np.ndarray:
    """Drops predicted regions that do not connect (in 3D) to a painted voxel: stray blobs elsewhere."""
    kept = vote.keep_connected((probabilities > 0.5).astype(np.uint8), anchors) > 0
    return np.where(kept | (probabilities <= 0.5), probabilities, 0.0).astype(np.float32)
