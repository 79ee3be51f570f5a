"""The self-test's CT (``self_test.py``), built with numpy: nothing to download, nothing from the engine's training
material. ``Testing/Python/slicer_layer/test_testdata.py`` checks the Logic segments it."""

from __future__ import annotations

import numpy as np

#: Voxel size of the test CT (i, j, k) in mm, as an abdominal CT's.
TEST_CT_SPACING = (0.8, 0.8, 2.5)
#: IJK-to-RAS directions of the test CT: rotated 15 degrees about S (an identity would hide axis mix-ups).
_ANGLE = np.radians(15.0)
TEST_CT_DIRECTIONS = ((-np.cos(_ANGLE), np.sin(_ANGLE), 0.0), (-np.sin(_ANGLE), -np.cos(_ANGLE), 0.0), (0.0, 0.0, 1.0))
TEST_CT_ORIGIN = (-60.0, 40.0, -30.0)


def makeTestCT(depth: int = 40, size: int = 160, seed: int = 0):
    """A small CT with a lesion: soft tissue (40 HU) in fat (-100 HU) inside a body in air, and an enhancing
    ellipsoid (90 HU, 26 x 22 x 28 mm) in the soft tissue, with 10 HU of noise. Arrays are (k, j, i).

    Returns:
        (image int16, truth uint8, painted uint8): ``painted`` holds the lesion's largest axial cross-section.
    """
    rng = np.random.default_rng(seed)
    k, j, i = np.mgrid[:depth, :size, :size].astype(float)
    x, y = (i - size / 2) * TEST_CT_SPACING[0], (j - size / 2) * TEST_CT_SPACING[1]
    z = (k - depth / 2) * TEST_CT_SPACING[2]
    image = np.full(k.shape, -1000.0)
    image[(x / 60.0) ** 2 + (y / 50.0) ** 2 < 1] = -100.0
    image[((x + 5) / 35.0) ** 2 + (y / 28.0) ** 2 < 1] = 40.0
    truth = ((x - 12) / 13.0) ** 2 + ((y - 4) / 11.0) ** 2 + (z / 14.0) ** 2 < 1
    image[truth] = 90.0
    image += rng.normal(0.0, 10.0, image.shape)
    largest = int(np.argmax(truth.reshape(depth, -1).sum(axis=1)))
    painted = np.zeros(truth.shape, dtype=np.uint8)
    painted[largest] = truth[largest]
    return image.astype(np.int16), truth.astype(np.uint8), painted


def addTestVolume(scene, image: np.ndarray, name: str = "GastricPropagate test CT"):
    """A scalar volume node in ``scene`` holding ``image`` (k, j, i) with the test CT's spacing, origin and oblique
    directions."""
    import vtk

    import slicer

    volumeNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(volumeNode, image)
    volumeNode.SetSpacing(*TEST_CT_SPACING)
    volumeNode.SetOrigin(*TEST_CT_ORIGIN)
    directions = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            directions.SetElement(row, column, TEST_CT_DIRECTIONS[row][column])
    volumeNode.SetIJKToRASDirectionMatrix(directions)
    volumeNode.CreateDefaultDisplayNodes()
    return volumeNode
