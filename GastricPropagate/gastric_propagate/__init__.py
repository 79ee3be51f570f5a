"""GastricPropagate engine: one painted axial slice of a gastric tumour -> 3D segmentation.

Pure Python (numpy, SimpleITK, PyTorch). Never imports ``slicer``, ``qt``, ``ctk`` or ``vtk``:
the 3D Slicer module is a thin layer on top of it.
"""

__version__ = "0.1.0"
