"""Synthetic training material (generators of CT-like volumes with lesions). Never loaded by Slicer at run time."""
