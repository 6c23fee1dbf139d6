"""Data sources and image operations of the toolkit.

* :mod:`whatifgan.data.mnist`: MNIST digits, embedded 5,000-digit default or full MNIST from a local path.
* :mod:`whatifgan.data.morpho`: Morpho-MNIST measurements and perturbations (Castro et al. 2019).
"""

from .image_scms import (
    GENERATORS,
    DigitPool,
    ImageAttribute,
    ImageSCMData,
    colored_mnist2,
    digit_pool,
    frontdoor_colored_mnist,
    generate,
    load_image_scm,
    morpho_mnist,
    napkin_mnist,
)
from .mnist import MNISTNotFoundError, load_mnist, read_idx, write_idx
from .morpho import (
    MEASUREMENTS,
    ImageMorphology,
    fracture,
    get_intensity,
    measure,
    measure_batch,
    set_intensity,
    set_thickness,
    swell,
    thicken,
    thin,
)

__all__ = [
    "GENERATORS",
    "DigitPool",
    "ImageAttribute",
    "ImageSCMData",
    "colored_mnist2",
    "digit_pool",
    "frontdoor_colored_mnist",
    "generate",
    "load_image_scm",
    "morpho_mnist",
    "napkin_mnist",
    "MEASUREMENTS",
    "ImageMorphology",
    "MNISTNotFoundError",
    "fracture",
    "get_intensity",
    "load_mnist",
    "measure",
    "measure_batch",
    "read_idx",
    "set_intensity",
    "set_thickness",
    "swell",
    "thicken",
    "thin",
    "write_idx",
]
