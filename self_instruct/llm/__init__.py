"""Model backends behind one interface (``base.Backend``), and the request engine they are driven by.

A leaf: nothing here imports the layers above it; backends are built from the settings by
``pipeline.create_backend``."""
