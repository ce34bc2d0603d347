"""Models in and out of gaperon.

- `hf`: Hugging Face `LlamaForCausalLM` folders (config.json + safetensors + tokenizer files), both ways.
- `safetensors_files`: sharded safetensors writing, and reading with header checks that name the file.
- `gguf`: llama.cpp GGUF import (dequantised weights, Q/K un-permuted to rotate-half); its tokenizer
  is rebuilt from the file's metadata by `gguf_tokenizer`.
- `dcp`: training checkpoints (written by the trainer).
- `loading.load_model(path)`: one entry point that recognises any of the above.

Every format error is a `ModelFormatError` whose message names the file (and the tensor).
"""

from gaperon.io.errors import ModelFormatError

__all__ = ["ModelFormatError"]
