"""Learn: the computations behind the interactive lessons, and their Plotly figures.

Every number a lesson shows comes from the library the product compresses with — coremltools' own
quantization, k-means and pruning routines, called on the chosen layer's real weights — so what the
lesson teaches is what the Compress page does. Figures are pure functions of arrays (``figures``).
"""
