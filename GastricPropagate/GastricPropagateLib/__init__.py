"""Slicer layer of GastricPropagate: turns MRML nodes into arrays for the engine and the result back into MRML.

Importable without the Slicer GUI (only ``slicer`` MRML classes, ``vtk`` and numpy at module level), so the Logic can
be used in batch scripts and tested headless with the ``slicer-core`` wheel. Nothing here imports ``qt`` or ``ctk``
at module level, and nothing imports torch until a computation actually runs. The engine runs in a child process
(``runner.py``).
"""

from .logic import (
    RESULTS_TABLE_NAME,
    GastricPropagateLogic,
    Masking,
    PreparedInput,
    ResultSegmentExistsError,
)
from .result_segment import resultSegmentName

__all__ = [
    "RESULTS_TABLE_NAME",
    "GastricPropagateLogic",
    "Masking",
    "PreparedInput",
    "ResultSegmentExistsError",
    "resultSegmentName",
]
