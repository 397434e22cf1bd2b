"""Full runs on Hugging Face models: compress block by block from the safetensors shards
(:func:`compress_streaming`), read the result back (:func:`load_compressed`) or multiply it out
into an ordinary model directory (:func:`export_dense`)."""

from .pipeline import StreamResult, compress_streaming
from .source import ModelSource, is_model_directory
from .store import is_streamed_output, read_manifest

__all__ = ["ModelSource", "StreamResult", "compress_streaming", "is_model_directory", "is_streamed_output", "read_manifest"]
