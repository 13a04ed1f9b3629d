"""Files in and out: finding and reading images (:mod:`.images`), output codecs and the
stored-file round trip (:mod:`.codecs`), the manifest (:mod:`.manifest`) and the atomic
writer (:mod:`.atomic`)."""

from adaptanon.io.atomic import atomic_write
from adaptanon.io.codecs import FORMATS, Codec, to_image, to_pixels
from adaptanon.io.images import IMAGE_EXTENSIONS, InputImage, collect_inputs, read_image
from adaptanon.io.manifest import ManifestWriter, read_manifest

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "Codec",
    "InputImage",
    "ManifestWriter",
    "atomic_write",
    "collect_inputs",
    "read_image",
    "read_manifest",
    "to_image",
    "to_pixels",
]
