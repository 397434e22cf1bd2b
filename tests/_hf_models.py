"""Tiny random Hugging Face models of the streaming families, saved as sharded safetensors with a
byte-level BPE tokenizer trained on text the project ships."""

from pathlib import Path

import torch

from dsf_core._torchvision_compat import prepare_transformers

TEXT = Path(__file__).resolve().parents[1] / "dsf_core" / "models" / "data" / "tiny_lm_eval.txt"
VOCAB = 300


def tokenizer():
    """A byte-level BPE tokenizer (vocabulary ``VOCAB``) as a ``PreTrainedTokenizerFast``."""
    prepare_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train([str(TEXT)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


def config(family: str, n_layers: int = 2):
    """An ``n_layers``-block, 32-wide config of ``family``."""
    prepare_transformers()
    import transformers as tf

    common = dict(vocab_size=VOCAB, num_hidden_layers=n_layers, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    if family in ("llama", "mistral", "qwen2"):
        cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}[family]
        return cls(**common, num_key_value_heads=1, max_position_embeddings=64)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=VOCAB, n_layer=n_layers, n_embd=32, n_head=2, n_positions=64, bos_token_id=0,
                             eos_token_id=0)
    if family == "opt":
        return tf.OPTConfig(vocab_size=VOCAB, num_hidden_layers=n_layers, hidden_size=32, num_attention_heads=2, ffn_dim=64,
                            word_embed_proj_dim=32, max_position_embeddings=64)
    if family == "bert":
        return tf.BertConfig(**common, max_position_embeddings=64)
    # Families streamed by reading the skeleton (not named in dsf_core.streaming.families): Gemma2 scales
    # its embeddings by a computed buffer and soft-caps its logits; BLOOM's blocks return tuples.
    if family == "gemma2":
        return tf.Gemma2Config(**common, num_key_value_heads=1, head_dim=16, sliding_window=8, max_position_embeddings=64)
    if family == "bloom":
        return tf.BloomConfig(vocab_size=VOCAB, n_layer=n_layers, hidden_size=32, n_head=2)
    raise ValueError(family)


def save_model(family: str, directory, *, seed: int = 0, with_tokenizer: bool = True, shard: str = "20KB",
               n_layers: int = 2) -> Path:
    """Save a random ``family`` model (several safetensors shards) and the tokenizer in ``directory``."""
    prepare_transformers()
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    auto = AutoModel if family == "bert" else AutoModelForCausalLM
    model = auto.from_config(config(family, n_layers)).eval()
    with torch.no_grad():  # norms and biases away from their 1/0 start, so that mistakes show
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    directory = Path(directory)
    model.save_pretrained(directory, max_shard_size=shard)
    if with_tokenizer:
        tokenizer().save_pretrained(directory)
    return directory
