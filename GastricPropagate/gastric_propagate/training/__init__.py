"""Training the proposer and the refiner."""
