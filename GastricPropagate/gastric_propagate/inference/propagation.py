"""The proposer's slice-by-slice propagation on the crop grid.

From each anchor (a painted slice) a chain walks away one slice at a time: the network segments
slice k from the images of slices k-d, k, k+d and the mask it found on slice k-d (a proposer trained with
``train --prompt-channel`` also reads the painted mask it started from, at every step). Chains beyond the
outermost anchors stop where the tumour ends; chains between two anchors run to the other anchor and
are blended with it, so an anchor is never changed and both ends agree. All active chains advance
together, one batched forward pass per step.

The network is a runner (``NetworkRunner``): numpy in, numpy out, so that the same loop runs a PyTorch module
(``networks.TorchRunner``) or an ONNX Runtime session (``onnx_networks.OnnxNetwork``) and imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from gastric_propagate.errors import Cancelled
from gastric_propagate.inference.masks import bounding_box

#: A network as the engine runs it: a float32 batch (N, C, S, S) -> float32 probabilities (N, S, S).
NetworkRunner = Callable[[np.ndarray], np.ndarray]
#: The most pixels (samples x height x width) one network call gets: ONNX Runtime keeps the memory of its largest
#: call for the session's life, about 430 bytes a pixel (a 1.4 L sarcoma's 272-pixel crops, 32 refiner slices at
#: once: +1.1 GB, and 2.4 GB at the peak). 600,000 pixels is 93 slices of the benchmark's 80-pixel crops (one call,
#: as before) and 8 of that sarcoma's, at the same time per slice.
MAX_BATCH_PIXELS = 600_000


@dataclass(frozen=True)
class InChunks:
    """``runner`` run on a batch cut into chunks of at most ``max_pixels`` pixels (at least one sample each): the
    same probabilities, each sample's own, with bounded memory."""

    runner: NetworkRunner
    max_pixels: int = MAX_BATCH_PIXELS

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        size = max(1, self.max_pixels // max(1, int(np.prod(batch.shape[2:]))))
        if len(batch) <= size:
            return self.runner(batch)
        return np.concatenate([self.runner(batch[start:start + size]) for start in range(0, len(batch), size)])


@dataclass(frozen=True)
class StopRule:
    """When an outward chain ends.

    Attributes:
        min_area_mm2: the tumour has ended when the predicted cross-section is smaller than this.
        runaway_factor: the protocol paints the largest cross-section, so a cross-section larger than this many
            times the largest anchor (20% slack for the outline's variation) is a leak into the stomach wall or
            a neighbour, not tumour.
        min_overlap: a cross-section with less than this fraction inside the previous one (dilated by
            ``overlap_dilation_mm``) has jumped to another structure: dropped, and the chain ends.
        overlap_dilation_mm: how far a cross-section may move from one slice to the next.
        max_growth: moving away from the painted (largest) cross-section a tumour does not suddenly widen: a
            cross-section larger than ``max_growth`` x the previous one plus ``growth_slack_mm2`` is a leak.
        max_outside_intensity: a cross-section with more than this fraction of its pixels outside the painted
            region's intensities (its 2nd-98th percentiles, widened by ``intensity_margin`` of their spread
            plus ``intensity_slack``, in network units) has left the tissue that was painted: a leak into
            contrast-filled lumen, fat or air. Dropped, and the chain ends.
        edge_pixels: a cross-section that reaches this close to the crop's edge has run into tissue far
            beyond the painted outline: a leak, cut back like a runaway (``clip_leaks``).
        max_extent_diameters: a chain ends this many painted equivalent diameters (along z) from its anchor.
        clip_leaks: instead of ending at a slice that grew too much (runaway, growth, crop edge), cut it back to
            the previous slice's outline (a leak is growth) and go on, for at most ``max_clipped_slices`` slices
            in a row. A jump or a move into other tissue still ends the chain: cutting back cannot mend those.
        confirm_end_views: where the proposer finds the tumour ended, the same input is given again in the other 7
            orientations of the square (flips and transposes, which training augments with): if at least this
            many of them (0-7) find a cross-section of ``min_area_mm2``, the slice takes their mean and the chain
            goes on (0: off). On small tumours the proposer can be bistable, finding nothing as given and the whole
            cross-section turned; at true ends the 8 agree (rules.md, CE, stop 50).
    """

    min_area_mm2: float = 12.0
    runaway_factor: float = 1.2
    min_overlap: float = 0.5
    overlap_dilation_mm: float = 6.0
    max_growth: float = 1.6
    growth_slack_mm2: float = 40.0
    max_outside_intensity: float = 0.4
    intensity_margin: float = 0.25
    intensity_slack: float = 0.05
    edge_pixels: int = 2
    max_extent_diameters: float = 2.0
    clip_leaks: bool = True
    max_clipped_slices: int = 3
    confirm_end_views: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.confirm_end_views <= 7:  # the other orientations of the square (``ORIENTATIONS``)
            raise ValueError(f"confirm_end_views {self.confirm_end_views}: 0 (off) to 7")


@dataclass
class _Chain:
    position: int          # the last slice this chain has a mask for
    direction: int         # +1 (up in K) or -1
    stop_before: int       # first slice it may not enter (the next anchor, or one past the limit)
    mask: np.ndarray       # binary mask on ``position``
    outward: bool          # beyond the outermost anchor: stops where the tumour ends
    origin: int            # the anchor it started from
    probabilities: dict[int, np.ndarray] = field(default_factory=dict)
    stop_reason: str = ""
    clipped: int = 0       # consecutive slices whose leak was cut back to the previous outline
    cut_back: list[int] = field(default_factory=list)  # every slice that was
    found_when_turned: list[int] = field(default_factory=list)  # slices only the other orientations found


@dataclass
class PropagationOutput:
    """Proposer probabilities on the crop grid (anchors are exactly 0/1) and how the chains ended."""

    probabilities: np.ndarray
    visited: list[int]
    stop_reasons: dict[str, str]
    cut_back: list[int] = field(default_factory=list)  # slices whose leak was cut back to the previous outline
    # Slices where the proposer as given found the tumour ended and its other orientations found a cross-section
    # (``StopRule.confirm_end_views``): the chain went on, on a bistable answer worth a look.
    found_when_turned: list[int] = field(default_factory=list)


def _three_slices(image: np.ndarray, k: int, direction: int) -> np.ndarray:
    """Images of slices k-d, k, k+d (clamped at the volume's ends), ordered along the walk."""
    last = image.shape[0] - 1
    previous = min(max(k - direction, 0), last)
    following = min(max(k + direction, 0), last)
    return image[[previous, k, following]]


def propagate(network: NetworkRunner, image: np.ndarray, anchors: dict[int, np.ndarray], *,
              limits: tuple[int, int], pixel_area_mm2: float, pixel_mm: float, rule: StopRule = StopRule(),
              slice_mm: float | None = None, slice_name: Callable[[int], int] = int,
              progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None, prompt: bool = False) -> PropagationOutput:
    """Runs the proposer from every anchor.

    Args:
        network: the proposer's runner, input (N, 4, S, S): three image slices and the previous mask; with
            ``prompt``, (N, 5, S, S): those and the mask of the anchor the chain started from.
        image: (Z, S, S) normalised crop, float32.
        anchors: axial index -> binary (S, S) mask of the painted slice on the crop grid.
        limits: lowest and highest axial index (inclusive) the chains may reach.
        pixel_area_mm2: area of one crop pixel; pixel_mm: its side.
        slice_mm: distance between working slices (for ``rule.max_extent_diameters``; None: no extent limit).
        slice_name: working index -> the CT slice it lies on, for the stop reasons.
        progress: called with (slices done, slices expected) after each step.
        should_stop: polled before each step; True raises Cancelled.
    """
    depth = image.shape[0]
    order = sorted(anchors)
    low, high = limits
    probabilities = np.zeros((depth,) + image.shape[1:], dtype=np.float32)
    for k in order:
        probabilities[k] = anchors[k]
    largest_anchor = max(float(anchors[k].sum()) for k in order) * pixel_area_mm2
    intensity_range = _painted_intensity_range(image, anchors, rule)
    max_steps = depth if slice_mm is None else max(
        1, int(rule.max_extent_diameters * 2.0 * np.sqrt(largest_anchor / np.pi) / slice_mm))

    chains = [_Chain(order[0], -1, low - 1, anchors[order[0]], True, order[0]),
              _Chain(order[-1], +1, high + 1, anchors[order[-1]], True, order[-1])]
    for below, above in zip(order, order[1:]):
        if above - below > 1:
            chains.append(_Chain(below, +1, above, anchors[below], False, below))
            chains.append(_Chain(above, -1, below, anchors[above], False, above))
    # The total is the most slices the limits allow; outward chains usually end well before it,
    # so the last report jumps to done == total.
    total = max(1, high - low + 1 - len(order))
    segmented: set[int] = set()
    overlap_structure = ndimage.iterate_structure(
        ndimage.generate_binary_structure(2, 1), max(1, int(round(rule.overlap_dilation_mm / pixel_mm))))

    active = [c for c in chains if c.position + c.direction != c.stop_before]
    for chain in chains:
        if chain not in active:
            chain.stop_reason = _limit_reason(chain, depth, slice_name)
    while active:
        if should_stop is not None and should_stop():
            raise Cancelled("Propagation was cancelled; nothing was written.")
        targets = [c.position + c.direction for c in active]
        inputs = np.stack([
            np.concatenate([_three_slices(image, k, c.direction), c.mask.astype(np.float32)[None]]
                           + ([anchors[c.origin].astype(np.float32)[None]] if prompt else []))
            for c, k in zip(active, targets)])
        predicted = network(inputs)
        turned: dict[int, int] = {}
        if rule.confirm_end_views:
            predicted, turned = _confirm_ends(network, inputs, predicted, [c.outward for c in active], rule,
                                              pixel_area_mm2)
        still_active = []
        for i, (chain, k, p) in enumerate(zip(active, targets, predicted)):
            mask = p > 0.5
            if chain.outward:
                kind, reason = _check_slice(rule, mask, chain.mask, image[k], slice_name(k), pixel_area_mm2,
                                            largest_anchor, intensity_range, overlap_structure)
                if kind == ENDED:
                    chain.probabilities[k] = p * mask  # visited: the tumour ends here
                    chain.stop_reason = reason if i not in turned else (
                        f"tumour ended on slice {slice_name(k)}: {turned[i]} of the proposer's {len(ORIENTATIONS)} "
                        "orientations found a cross-section there, but not in the same place")
                    continue
                if kind == GROWTH and rule.clip_leaks and chain.clipped < rule.max_clipped_slices:
                    # Keep the tumour, drop the leak: a leak is growth, so cut the slice back to the previous
                    # outline and go on; a chain that keeps leaking ends after ``max_clipped_slices``.
                    mask = mask & chain.mask
                    p = p * mask
                    chain.clipped += 1
                    chain.cut_back.append(k)
                    if float(mask.sum()) * pixel_area_mm2 < rule.min_area_mm2:
                        chain.probabilities[k] = p
                        chain.stop_reason = f"tumour ended on slice {slice_name(k)} after a leak was cut back"
                        continue
                elif kind:
                    chain.stop_reason = reason if not chain.clipped else (
                        f"{reason}; {chain.clipped} slice(s) before it were cut back to the previous outline")
                    continue
                else:
                    chain.clipped = 0
            chain.probabilities[k] = p
            chain.position, chain.mask = k, mask
            if i in turned:
                chain.found_when_turned.append(k)
            if k + chain.direction == chain.stop_before:
                chain.stop_reason = _limit_reason(chain, depth, slice_name)
                continue
            if chain.outward and abs(k - chain.origin) >= max_steps:
                chain.stop_reason = (f"stopped after slice {slice_name(k)}: {rule.max_extent_diameters:g}x the "
                                     "painted diameter from the painted slice, further than a tumour of that "
                                     "size plausibly reaches")
                continue
            still_active.append(chain)
        segmented.update(targets)
        active = still_active
        if progress is not None:
            progress(total if not active else min(len(segmented), total - 1), total)

    visited = set(order)
    for chain in chains:
        visited.update(chain.probabilities)
        if chain.outward:
            for k, p in chain.probabilities.items():
                probabilities[k] = p
    for below, above in zip(order, order[1:]):
        _blend_between(probabilities, chains, below, above)
    stop_reasons = {"down": chains[0].stop_reason, "up": chains[1].stop_reason}
    return PropagationOutput(probabilities=probabilities, visited=sorted(visited), stop_reasons=stop_reasons,
                             cut_back=sorted(k for chain in chains for k in chain.cut_back),
                             found_when_turned=sorted(k for chain in chains for k in chain.found_when_turned))


def _orientations():
    """The 8 symmetries of the square as (forward, inverse) on the last two axes: identity first."""
    def make(transpose: bool, flip_y: bool, flip_x: bool):
        def forward(a):
            a = np.swapaxes(a, -1, -2) if transpose else a
            a = a[..., ::-1, :] if flip_y else a
            return a[..., ::-1] if flip_x else a

        def inverse(a):
            a = a[..., ::-1] if flip_x else a
            a = a[..., ::-1, :] if flip_y else a
            return np.swapaxes(a, -1, -2) if transpose else a
        return forward, inverse
    return [make(t, fy, fx) for t in (False, True) for fy in (False, True) for fx in (False, True)]


ORIENTATIONS = _orientations()


def _confirm_ends(network: NetworkRunner, inputs: np.ndarray, predicted: np.ndarray, outward: list[bool],
                  rule: StopRule, pixel_area_mm2: float) -> tuple[np.ndarray, dict[int, int]]:
    """``predicted`` with each outward chain's "tumour ended" asked again in the other 7 orientations
    (``StopRule.confirm_end_views``), one batched pass for all of them; and, for each batch index whose slice now
    takes the mean of the orientations that found a cross-section, how many of the 8 did."""
    min_pixels = rule.min_area_mm2 / pixel_area_mm2
    ending = [i for i, (p, out) in enumerate(zip(predicted, outward)) if out and (p > 0.5).sum() < min_pixels]
    if not ending:
        return predicted, {}
    others = ORIENTATIONS[1:]
    batch = np.concatenate([np.ascontiguousarray(forward(inputs[ending])) for forward, _ in others])
    answers = network(batch).reshape(len(others), len(ending), *predicted.shape[1:])
    predicted = predicted.copy()
    turned = {}
    for j, i in enumerate(ending):
        views = np.stack([predicted[i]] + [inverse(answers[v, j]) for v, (_, inverse) in enumerate(others)])
        found = (views > 0.5).sum(axis=(1, 2)) >= min_pixels
        if found.sum() >= rule.confirm_end_views:
            predicted[i] = views[found].mean(axis=0)
            turned[i] = int(found.sum())
    return predicted, turned


def _blend_between(probabilities: np.ndarray, chains: list[_Chain], below: int, above: int) -> None:
    """Between two anchors, weights each chain by its closeness to the anchor it came from. A chain that has lost
    the tumour (nothing above 0.5 on this slice or on one before it) has nothing to say there: the other chain
    alone gives the slice. Between two anchors the tumour goes on by definition, and a chain fed its own empty mask
    stays empty: weighted in, it emptied the slices next to its anchor (the reader's corrections on a tapering end
    are where this happens)."""
    upward = next((c for c in chains if not c.outward and c.origin == below and c.direction == 1), None)
    downward = next((c for c in chains if not c.outward and c.origin == above and c.direction == -1), None)
    up_lost = _lost_from(upward, range(below + 1, above))
    down_lost = _lost_from(downward, range(above - 1, below, -1))
    for k in range(below + 1, above):
        weight_up = 0.0 if k >= up_lost else 1.0 / (k - below)
        weight_down = 0.0 if k <= down_lost else 1.0 / (above - k)
        if weight_up == weight_down == 0.0:  # both lost it here: as before, each by its closeness
            weight_up, weight_down = 1.0 / (k - below), 1.0 / (above - k)
        p_up = upward.probabilities.get(k) if upward else None
        p_down = downward.probabilities.get(k) if downward else None
        p_up = np.zeros_like(probabilities[k]) if p_up is None else p_up
        p_down = np.zeros_like(probabilities[k]) if p_down is None else p_down
        probabilities[k] = (weight_up * p_up + weight_down * p_down) / (weight_up + weight_down)


def _lost_from(chain: _Chain | None, slices: range) -> int | float:
    """The first slice (in the chain's walking order) from which ``chain`` holds nothing above 0.5; past the far end
    when it never lost the tumour (+inf walking up, -inf walking down), or when there is no chain."""
    never = float("inf") if slices.step > 0 else float("-inf")
    if chain is None:
        return never
    for k in slices:
        p = chain.probabilities.get(k)
        if p is None or not (p > 0.5).any():
            return k
    return never


def _limit_reason(chain: _Chain, depth: int, slice_name: Callable[[int], int]) -> str:
    if not chain.outward:
        return "reached the next painted slice"
    edge = chain.stop_before in (-1, depth)
    return ("reached the edge of the volume" if edge
            else f"reached the slice limit ({slice_name(chain.stop_before - chain.direction)})")


def _painted_intensity_range(image: np.ndarray, anchors: dict[int, np.ndarray],
                             rule: StopRule) -> tuple[float, float]:
    """The network-unit intensities a tumour slice may hold: the anchors' 2nd-98th percentiles, widened."""
    values = np.concatenate([image[k][mask] for k, mask in anchors.items() if mask.any()])
    low, high = np.percentile(values, [2, 98])
    margin = rule.intensity_margin * (high - low) + rule.intensity_slack
    return float(low - margin), float(high + margin)


# What ``_check_slice`` finds: the tumour ended, it grew into a neighbour (may be cut back), or it went elsewhere.
ENDED, GROWTH, ELSEWHERE = "ended", "growth", "elsewhere"


def _check_slice(rule: StopRule, mask: np.ndarray, previous: np.ndarray, image_slice: np.ndarray, name: int,
                 pixel_area_mm2: float, largest_anchor: float, intensity_range: tuple[float, float],
                 overlap_structure: np.ndarray) -> tuple[str, str]:
    """(kind, reason) for an outward chain's ``mask``: kind is ENDED, GROWTH, ELSEWHERE, or "" when plausible."""
    area = float(mask.sum()) * pixel_area_mm2
    if area < rule.min_area_mm2:
        return ENDED, f"tumour ended: the proposer found {area:.0f} mm2 on slice {name}"
    if area > rule.runaway_factor * largest_anchor:
        return GROWTH, (f"stopped before slice {name}: its cross-section ({area:.0f} mm2) is "
                        f"{area / largest_anchor:.1f}x the painted one, likely a leak")
    previous_area = float(previous.sum()) * pixel_area_mm2
    if area > rule.max_growth * previous_area + rule.growth_slack_mm2:
        return GROWTH, (f"stopped before slice {name}: its cross-section grew from {previous_area:.0f} to "
                        f"{area:.0f} mm2, likely a leak")
    # The dilation reaches no further than the structure's radius: worked out in that box around the previous mask
    # (the same count as over the whole crop, several times faster on a large crop).
    inside = 0
    if previous.any():
        near = bounding_box(previous, margin=overlap_structure.shape[0] // 2)
        inside = np.logical_and(mask[near], ndimage.binary_dilation(previous[near], overlap_structure)).sum()
    if inside < rule.min_overlap * mask.sum():
        return ELSEWHERE, f"ended before slice {name}: the mask jumped away from the previous slice"
    edge = rule.edge_pixels
    if edge and (mask[:edge].any() or mask[-edge:].any() or mask[:, :edge].any() or mask[:, -edge:].any()):
        return GROWTH, f"stopped before slice {name}: the mask reached the edge of the crop, likely a leak"
    values = image_slice[mask]
    outside = float(np.mean((values < intensity_range[0]) | (values > intensity_range[1])))
    if outside > rule.max_outside_intensity:
        return ELSEWHERE, (f"ended before slice {name}: {100 * outside:.0f}% of its pixels lie outside the painted "
                           "region's intensities, likely a leak into another tissue")
    return "", ""
