"""Everything between a user's files and the model's tensors: orientation, preprocessing, datasets, phantoms.

Import from the submodules (``vol25d.data.preprocess``, ``vol25d.data.dataset``, ``vol25d.data.phantom``,
``vol25d.data.gitract`` …).
"""
