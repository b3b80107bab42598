"""Built-in data set ``fashion-scenes``: real Fashion-MNIST objects composed into scenes and
videos with exact dense labels, written in the ADE20K, DAVIS 2017 and ImageFolder layouts.

See docs/data.md. Typical use::

    from selfpatch.data.builtin import ensure_builtin
    data = ensure_builtin()          # builds once (~1 min on 2 cores), then reuses the cache
    data.seg_root, data.davis_root   # read like ADE20K / DAVIS 2017
"""

from selfpatch.data.builtin.build import default_root, ensure_builtin, read_manifest
from selfpatch.data.builtin.preview import write_preview
from selfpatch.data.builtin.source import CLASS_NAMES, load_fashion_mnist
from selfpatch.data.builtin.spec import VERSION, BuiltinData, BuiltinSpec

__all__ = [
    "CLASS_NAMES",
    "VERSION",
    "BuiltinData",
    "BuiltinSpec",
    "default_root",
    "ensure_builtin",
    "load_fashion_mnist",
    "read_manifest",
    "write_preview",
]
