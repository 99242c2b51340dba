"""The contract every layer shares: the model manifest (``cinetron.json``), the served
model and tensor names, and the repository spec. Pure Python: no numpy, no torch."""
