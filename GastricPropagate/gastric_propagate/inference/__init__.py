"""What runs when a user segments: networks, preprocessing, propagation, refinement, the vote, the pipeline and its
checkpoints. The Slicer module loads this part alone."""
