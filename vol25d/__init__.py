"""vol25d: fully 3D segmentation of MRI volumes with the random 2.5D U-Net.

Maximum-intensity (or sum) projections of a volume from many directions about its rotation axis, a 2D U-Net
on every view, a learnable filtration and a linear back-projection that rebuild a 3D mask, and a small
fine-tuning head. See ``README.md`` for the commands, ``docs/method.md`` for the method and
``docs/design.md`` for the code.
"""

__version__ = "0.1.0"
