"""What a result tells the reader before they trust it, as data: its kind, its English sentence, and the figures the
sentence names, so that the Slicer module (which loads no torch) can word it in the reader's language."""

from __future__ import annotations

from dataclasses import dataclass, field

# The painted slice looks smaller than a nearby cross-section. Values: painted_slice, slice, ratio.
LARGER_NEIGHBOUR = "larger_neighbour"
# A painted slice is the volume's first or last: the tumour may go on beyond the scan. Values: painted_slice, edge
# ("first" or "last"), slices (the volume's number of axial slices).
PAINTED_AT_VOLUME_EDGE = "painted_at_volume_edge"
# The result reaches the volume's first or last slice (not a painted one) with a sizeable cross-section: the tumour may
# go on beyond the scan. Values: slice, edge ("first" or "last"), share (the result's there, of the outermost painted
# cross-section).
RESULT_AT_VOLUME_EDGE = "result_at_volume_edge"

# The volume's K slices are not axial (a sagittal or coronal series): the result was propagated across the body.
# Values: orientation ("sagittal" or "coronal").
NOT_AXIAL = "not_axial"
# A painted slice holds several separate regions (a stray stroke, or a tumour cut in two pieces). Values:
# painted_slice, regions, largest_mm2, others_mm2.
SEPARATE_REGIONS = "separate_regions"
# A painted slice's region encloses more than it holds: an outline drawn but not filled (or a ring-shaped tumour
# around the lumen), propagated as a ring. Values: painted_slice, painted_mm2, enclosed_mm2.
UNFILLED_OUTLINE = "unfilled_outline"
# The vote's reach along z ended the result on a side where it, or the registration, still covers much of the painted
# cross-section: the tumour may go on beyond it. Values: slice (the result's last slice there), direction ("down" or
# "up"), painted_slice, share (the result's, of the painted cross-section), reach (painted diameters),
# registration_share (the registration's there where the advice comes from it, the result's own share being small;
# else None).
CUT_AT_REACH = "cut_at_reach"
# The result ended inside the vote's reach on a side where the registration still follows much of the painted
# cross-section on its last slice (the networks and the copy outvoted it): the tumour may go on. Values: slice (the
# result's last slice there), direction, painted_slice, registration_share.
ENDED_WHILE_FOLLOWED = "ended_while_followed"


@dataclass(frozen=True)
class Advice:
    """One thing the reader should know before trusting a result.

    Attributes:
        kind: what it is about, one of the constants above (``LARGER_NEIGHBOUR`` ... ``ENDED_WHILE_FOLLOWED``).
        sentence: what to tell the reader, in English: the CLI prints it and the report holds it.
        values: the figures the sentence names.
    """

    kind: str
    sentence: str
    values: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: the kind, the sentence and the values side by side."""
        return {"kind": self.kind, "sentence": self.sentence, **self.values}


def larger_neighbour_advice(painted_slice: int, slice_index: int, ratio: float) -> Advice:
    """Slice ``slice_index`` looks ``ratio`` times as large as the painted one, which was taken as the largest."""
    ratio = round(float(ratio), 2)  # the sentence and the values name the same figure, wherever it is worded
    sentence = (f"Slice {slice_index} looks {ratio:.1f} times as large as the painted slice {painted_slice}: the "
                "painted slice may not be the tumour's largest cross-section. If it is not, run again with it marked "
                "as not the largest (the module's 'is the largest cross-section' box unchecked; "
                "--painted-not-largest).")
    return Advice(LARGER_NEIGHBOUR, sentence, {"painted_slice": int(painted_slice), "slice": int(slice_index),
                                               "ratio": ratio})


def painted_at_volume_edge_advice(painted_slice: int, slices: int) -> Advice:
    """The painted slice ``painted_slice`` is the first or the last of the volume's ``slices`` axial slices."""
    edge = "first" if painted_slice == 0 else "last"
    sentence = (f"The painted slice {painted_slice} is the {edge} slice of the volume: the tumour may go on beyond the "
                "scan, where nothing can be segmented, so the result and its volume may miss part of it. Check that "
                "the CT covers the whole tumour.")
    return Advice(PAINTED_AT_VOLUME_EDGE, sentence, {"painted_slice": int(painted_slice), "edge": edge,
                                                     "slices": int(slices)})


def result_at_volume_edge_advice(slice_index: int, share: float) -> Advice:
    """The result's end slice ``slice_index`` is the volume's first or last, where it holds ``share`` of the painted
    cross-section."""
    edge = "first" if slice_index == 0 else "last"
    share = round(float(share), 2)
    sentence = (f"The result reaches the {edge} slice of the volume ({slice_index}) with {share:.0%} of the painted "
                "cross-section: the tumour may go on beyond the scan, where nothing can be segmented, so the result "
                "and its volume may miss part of it. Check that the CT covers the whole tumour.")
    return Advice(RESULT_AT_VOLUME_EDGE, sentence, {"slice": int(slice_index), "edge": edge, "share": share})


def separate_regions_advice(painted_slice: int, areas_mm2: list[float]) -> Advice:
    """The painted slice ``painted_slice`` holds separate regions of these areas (largest first)."""
    largest, others = round(float(areas_mm2[0]), 1), round(float(sum(areas_mm2[1:])), 1)
    sentence = (f"The painted slice {painted_slice} holds {len(areas_mm2)} separate regions (the largest {largest:g} "
                f"mm², the others {others:g} mm² together): each one was propagated as tumour, and their area together "
                "set how far the result reaches along z (a stray stroke can make the tumour's own result run on past "
                "its ends). If one is a stray stroke, erase it and run again.")
    return Advice(SEPARATE_REGIONS, sentence, {"painted_slice": int(painted_slice), "regions": len(areas_mm2),
                                               "largest_mm2": largest, "others_mm2": others})


def unfilled_outline_advice(painted_slice: int, painted_mm2: float, enclosed_mm2: float) -> Advice:
    """The painted region on ``painted_slice`` holds ``painted_mm2`` and encloses ``enclosed_mm2`` more."""
    painted, enclosed = round(float(painted_mm2), 1), round(float(enclosed_mm2), 1)
    sentence = (f"The painted region on slice {painted_slice} encloses {enclosed:g} mm² that it does not hold (it "
                f"holds {painted:g} mm²): it was propagated as a ring. If it is an outline meant as the whole "
                "cross-section, paint it filled (the Segment Editor's Draw effect fills the outline it draws) and run "
                "again; a tumour that is itself a ring (around the gastric lumen) is kept as painted.")
    return Advice(UNFILLED_OUTLINE, sentence, {"painted_slice": int(painted_slice), "painted_mm2": painted,
                                               "enclosed_mm2": enclosed})


def not_axial_advice(orientation: str) -> Advice:
    """The volume's K slices are ``orientation`` ("sagittal" or "coronal"), not axial."""
    across = "left to right" if orientation == "sagittal" else "front to back"
    sentence = (f"This volume's slices are {orientation}, not axial: the result was propagated from the painted slice "
                f"{across} along the volume's own slices, and the networks learned axial slices. Check it closely, "
                "or reorient the CT to axial slices (in Slicer: Orient Scalar Volume, orientation Axial), paint on "
                "that volume and run again.")
    return Advice(NOT_AXIAL, sentence, {"orientation": orientation})


def cut_at_reach_advice(slice_index: int, direction: str, painted_slice: int, share: float, reach: float,
                        registration_share: float | None = None) -> Advice:
    """The vote's reach (``reach`` painted diameters from ``painted_slice``) ended the result at ``slice_index``, going
    ``direction``, where it still covers ``share`` of the painted cross-section, or where the registration still
    covers ``registration_share`` of it (given only when that is why: the sentence then names the registration)."""
    share, reach = round(float(share), 2), round(float(reach), 2)
    followed = None if registration_share is None else round(float(registration_share), 2)
    where = (f"The result stops at slice {slice_index}, as far as it may reach ({reach:g} painted diameters from the "
             f"painted slice {painted_slice}), ")
    if followed is None:
        where += f"and still covers {share:.0%} of the painted cross-section there"
    else:
        where += (f"where the registration still follows a cross-section of {followed:.0%} of the painted one "
                  f"(the result covers {share:.0%})")
    return Advice(CUT_AT_REACH, where + _may_go_on_beyond(slice_index, direction),
                  {"slice": int(slice_index), "direction": direction, "painted_slice": int(painted_slice),
                   "share": share, "reach": reach, "registration_share": followed})


def ended_while_followed_advice(slice_index: int, direction: str, painted_slice: int,
                                registration_share: float) -> Advice:
    """The result ends at ``slice_index`` going ``direction``, inside the vote's reach, where the registration still
    covers ``registration_share`` of the painted cross-section of ``painted_slice``."""
    followed = round(float(registration_share), 2)
    sentence = (f"The result ends at slice {slice_index}, but the registration still follows a cross-section of "
                f"{followed:.0%} of the painted one there") + _may_go_on_beyond(slice_index, direction)
    return Advice(ENDED_WHILE_FOLLOWED, sentence, {"slice": int(slice_index), "direction": direction,
                                                   "painted_slice": int(painted_slice),
                                                   "registration_share": followed})


def _may_go_on_beyond(slice_index: int, direction: str) -> str:
    """The end of the sentences of the advice on a result that may end short: what it means, and what to do; the
    side is named, since both ends can be one slice (slices thicker than the reach)."""
    side = f"K {'>' if direction == 'up' else '<'} {slice_index}"
    return (f": the tumour may go on beyond it. Check the slices beyond slice {slice_index} ({side}); if it does, "
            "paint it on a slice further out and run again with both painted slices (the module's corrected slices; "
            "--keyframes).")
