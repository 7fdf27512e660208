"""Random-weight Idefics3 (SmolVLM architecture) checkpoints built from a config, saved like real ones.

There is no model hub here or on the GPU machine, so the transformers VLM path is exercised with
checkpoints built locally: a word-level tokenizer made on the spot, an Idefics3 processor and a
random-weight model, written with `save_pretrained` so that `TransformersVlmChatModel` loads them
exactly as it loads a downloaded SmolVLM. `TINY` runs on a CPU in a second (tests); `SMOLVLM_2B`
has SmolVLM-Instruct's shapes (~2.2B parameters) for `benchmarks/device_check.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SPECIALS = ["<unk>", "<pad>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
            "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
WORDS = ("the a fee is wire limit card passport expires on page your statement balance assistant user system "
         "yes no : . ? , Assistant User System").split()


@dataclass(frozen=True)
class VlmShape:
    """The sizes that matter: text decoder, vision tower, image tiling."""

    vocab_size: int  # ≥ the tokenizer's words; filler words make up the rest
    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    image_size: int  # one tile's side, pixels
    patch_size: int
    scale_factor: int  # pixel-shuffle factor of the connector
    longest_edge: int  # pages are resized to this before tiling
    split_images: bool

    @property
    def image_seq_len(self) -> int:
        """Tokens per image tile after the connector."""
        return (self.image_size // self.patch_size) ** 2 // self.scale_factor**2


TINY = VlmShape(vocab_size=0, text_hidden=32, text_intermediate=64, text_layers=1, text_heads=2, vision_hidden=32,
                vision_intermediate=64, vision_layers=1, vision_heads=2, image_size=32, patch_size=8,
                scale_factor=2, longest_edge=64, split_images=False)
# SmolVLM-Instruct's published shapes: SigLIP-so400m vision tower, a 1.7B Llama decoder.
SMOLVLM_2B = VlmShape(vocab_size=49155, text_hidden=2048, text_intermediate=8192, text_layers=24, text_heads=32,
                      vision_hidden=1152, vision_intermediate=4304, vision_layers=27, vision_heads=16,
                      image_size=384, patch_size=14, scale_factor=3, longest_edge=1536, split_images=True)


def _tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + WORDS
    words += [f"w{i}" for i in range(max(0, vocab_size - len(words)))]
    backend = Tokenizer(models.WordLevel(vocab={tok: i for i, tok in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=r"<[^>]+>", behavior="isolated"),
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation(),
    ])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", additional_special_tokens=SPECIALS[2:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _config(shape: VlmShape, tokenizer):
    from transformers import Idefics3Config

    return Idefics3Config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=shape.scale_factor,
        pad_token_id=tokenizer.pad_token_id,
        vision_config={"hidden_size": shape.vision_hidden, "intermediate_size": shape.vision_intermediate,
                       "num_hidden_layers": shape.vision_layers, "num_attention_heads": shape.vision_heads,
                       "image_size": shape.image_size, "patch_size": shape.patch_size, "num_channels": 3},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": shape.text_hidden,
                     "intermediate_size": shape.text_intermediate, "num_hidden_layers": shape.text_layers,
                     "num_attention_heads": shape.text_heads, "num_key_value_heads": shape.text_heads,
                     "max_position_embeddings": 16384, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
    )


def build_random_idefics3(out: Path, shape: VlmShape = TINY, *, device: str = "cpu", seed: int = 0) -> Path:
    """Write a random-weight Idefics3 checkpoint (weights, config, tokenizer, processor) into `out`.

    `device="cuda"` initialises the weights on the GPU in bf16 (seconds for 2B parameters, where a
    CPU needs minutes); the saved files are the same either way.
    """
    import torch
    from transformers import Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(shape.vocab_size)
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": shape.longest_edge}, max_image_size={"longest_edge": shape.image_size},
        do_image_splitting=shape.split_images,
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=shape.image_seq_len, chat_template=CHAT_TEMPLATE)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Idefics3ForConditionalGeneration(_config(shape, tokenizer))
    if device != "cpu":
        model = model.to(torch.bfloat16)  # what a published checkpoint ships; halves the file
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    return out
