"""Physics-informed neural network (PtychoPINN) ptychographic reconstruction.

Shape and unit glossary, used by every docstring in this package:

    B       batch of groups (solution regions) fed to the model at once.
    N       patch side in pixels: diffraction frames, probe and object patches are N x N
            (N in 64, 128, 256).
    g       gridsize; C = g**2 channels, one per member of a group. Channel c maps to
            grid cell (row = c // g, col = c % g), row-major, in every transform.
    M       side of a square canvas (stitched object or reassembly region) in pixels.
    n       number of scan images (diffraction frames) in a dataset or bundle.
    K       neighbour count: nearest scan positions a group's C members are drawn from.

Layouts:

    (B, N, N, C)        channel layout of model inputs and outputs.
    (B*C, N, N, 1)      flat layout, channel-major inside each group (index b*C + c).
    (B, 1, 2, C)        positions/offsets; axis 2 index 0 = x (column), 1 = y (row).
    (n, 2)              per-image offsets as [dx, dy].

Units and dtypes:

    Coordinates and offsets are in pixels, float64; x is the column (width) axis and y
    the row (height) axis. Translating by (dx, dy) moves content +dx columns, +dy rows.
    Diffraction amplitudes are float32, probe and object arrays complex64, phases in
    radians in (-pi, pi], spatial frequencies in cycles per pixel.
"""
