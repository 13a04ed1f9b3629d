"""Files in and out: finding and reading images, and turning what a library user holds into
an image (:mod:`.images`), output codecs and the stored-file round trip (:mod:`.codecs`),
the manifest (:mod:`.manifest`) and the atomic writer (:mod:`.atomic`)."""

from adaptanon.io.atomic import atomic_write
from adaptanon.io.codecs import FORMATS, Codec, to_image, to_pixels
from adaptanon.io.images import (
    IMAGE_EXTENSIONS,
    ImageLike,
    InputImage,
    as_image,
    collect_inputs,
    like_input,
    read_image,
)
from adaptanon.io.manifest import ManifestWriter, read_manifest

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "Codec",
    "ImageLike",
    "InputImage",
    "ManifestWriter",
    "as_image",
    "atomic_write",
    "collect_inputs",
    "like_input",
    "read_image",
    "read_manifest",
    "to_image",
    "to_pixels",
]
