"""What a phase job reads: the dataset's files (given, simulated, or converted from CXI) and trained networks."""
