"""The image families: class splits of bundled digits, textures -> digits, datasets on disk.

`base.py` (the shared ImageTask and class-split logic), `models.py` (small CNNs, ResNet-18),
`datasets.py` (bounded readers for IDX, CIFAR pickles and image folders), and one module per
task: `digits.py`, `cross_domain.py`, `disk.py`.
"""
