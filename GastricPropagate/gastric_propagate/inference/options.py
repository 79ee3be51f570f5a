"""What a user chooses for one run: how far and from what the propagation runs.

Kept apart from the pipeline (and free of torch) so that the Slicer panel and the CLI can build options
without loading the networks' libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

# How far the vote's registration and tapered copy reach each way along z, in painted equivalent diameters; chosen
# on the dev cases (``consensus.REACH_FACTOR`` has the figures). Here, free of the engine's libraries, for the CLI.
VOTE_REACH = 0.75
# How far the vote's registration reaches when the painted slice is not the largest cross-section, in painted
# equivalent diameters (``consensus.py`` has the figures).
NOT_LARGEST_REGISTRATION_REACH = 3.0


@dataclass(frozen=True)
class PropagationOptions:
    """How far and from what the propagation runs.

    Attributes:
        keyframes: accept several painted slices; each one is a fixed anchor that is never changed.
            Without it, an annotation on more than one slice is refused (the single-slice contract).
        min_slice: lowest axial index the result may reach (inclusive), or None.
        max_slice: highest axial index the result may reach (inclusive), or None.
        max_distance_mm: furthest distance from the nearest anchor slice, along the slice axis, or None.
        use_refiner: run the refiner after the proposer (switch off to measure the proposer alone).
        use_consensus: keep the voxels that at least two of three opinions hold: the networks, slice-to-slice
            registration and the painted outline copied along z (see ``inference/consensus.py``), with or without
            corrected slices (keyframes); switch off to measure the networks alone.
        painted_is_largest: the painted slice is the tumour's largest cross-section, as the protocol asks. The
            leak rules then compare each slice with it. When another slice was painted, set it to False: the
            size-based leak rules are off (neighbouring slices may well be larger) and the crop gets
            ``NOT_LARGEST_EXTRA_MARGIN_MM`` more margin, since the tumour reaches beyond the painted outline; the vote's
            registration reaches ``NOT_LARGEST_REGISTRATION_REACH`` diameters and its copy does not taper.
        vote_reach: how far the vote's registration and copied outline reach each way along z, in painted
            equivalent diameters; None keeps ``consensus.REACH_FACTOR`` (for experiments: scripts/choose_vote.py).
            When the painted slice is not the largest, the registration reaches at least
            ``NOT_LARGEST_REGISTRATION_REACH``.
    """

    keyframes: bool = False
    min_slice: int | None = None
    max_slice: int | None = None
    max_distance_mm: float | None = None
    use_refiner: bool = True
    use_consensus: bool = True
    painted_is_largest: bool = True
    vote_reach: float | None = None
