"""A transformers vision-language model (Qwen2.5-VL, SmolVLM / Idefics3, …) for GPU serving.

Loaded from a local directory only (`settings.vlm_path`, `local_files_only=True`: no model hub).
With CUDA it is quantized to 4-bit NF4 by bitsandbytes (double quantization, bf16 compute) and
placed by accelerate's `device_map="auto"`; on a CPU it loads unquantized in float32 (bitsandbytes
4-bit needs a GPU). Uploaded document images travel with the user message so the model can look
at the page beside the OCR'd fields. Tokens stream through `TextIteratorStreamer` while
`generate()` runs on a worker thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from docteller.model import sha256_file
from docteller.protocols import ChatMessage
from docteller.settings import Settings, get_settings

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin")


class VlmLoadError(RuntimeError):
    """The VLM directory is missing or unusable."""


def weights_digest(model_dir: Path) -> str:
    """sha256 over the weight files' digests (sorted by name): one id for a sharded checkpoint."""
    import hashlib

    files = sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise VlmLoadError(f"{model_dir}: no *.safetensors or *.bin weight files")
    if len(files) == 1:
        return sha256_file(files[0])
    combined = hashlib.sha256()
    for f in files:
        combined.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return combined.hexdigest()


class TransformersVlmChatModel:
    """`ChatModel` over a local transformers image-text-to-text checkpoint."""

    accepts_images = True  # sessions attach uploaded pages to the user message

    def __init__(self, model_dir: Path, *, quantize_4bit: bool | None = None) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "config.json").is_file():
            raise VlmLoadError(f"{model_dir}: not a transformers model directory (no config.json)")
        self.model_dir = model_dir
        self.model_id = model_dir.name
        self.model_hash = weights_digest(model_dir)
        cuda = torch.cuda.is_available()
        quantize_4bit = cuda if quantize_4bit is None else quantize_4bit
        load_kwargs: dict[str, Any] = {"local_files_only": True}
        if quantize_4bit:
            if not cuda:
                raise VlmLoadError("4-bit NF4 quantization (bitsandbytes) needs a CUDA GPU")
            from transformers import BitsAndBytesConfig

            load_kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
            load_kwargs["device_map"] = "auto"
            load_kwargs["dtype"] = torch.bfloat16
        elif cuda:
            load_kwargs["device_map"] = "auto"
            load_kwargs["dtype"] = torch.bfloat16
        else:
            load_kwargs["dtype"] = torch.float32
        self.quantized = quantize_4bit
        self.last_usage: dict[str, Any] = {}
        self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, **load_kwargs)
        self.model.eval()
        # One generation at a time per loaded model: GPU memory is sized for one batch.
        self._lock = threading.Lock()
        log.info("loaded VLM %s (4-bit=%s, device=%s)", self.model_id, quantize_4bit, self.model.device)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "TransformersVlmChatModel":
        settings = settings or get_settings()
        if settings.vlm_path is None:
            raise VlmLoadError(
                "llm_backend=transformers needs DOCTELLER_VLM_PATH: a local model directory "
                "(e.g. SmolVLM or Qwen2.5-VL saved with save_pretrained)"
            )
        return cls(settings.vlm_path)

    @staticmethod
    def _template_messages(messages: Sequence[ChatMessage]) -> tuple[list[dict[str, Any]], list[Any]]:
        """Chat-template structure with image placeholders, and the images in the same order."""
        templated: list[dict[str, Any]] = []
        images: list[Any] = []
        for m in messages:
            content: list[dict[str, Any]] = []
            for image in m.images:
                content.append({"type": "image"})
                images.append(image.convert("RGB") if hasattr(image, "convert") else image)
            content.append({"type": "text", "text": m.content})
            templated.append({"role": m.role, "content": content})
        return templated, images

    def _inputs(self, messages: Sequence[ChatMessage]) -> Any:
        """Chat-templated, processed model inputs (text and images) on the model's device."""
        templated, images = self._template_messages(messages)
        prompt = self.processor.apply_chat_template(templated, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=prompt, images=images or None, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs and self.model.dtype != inputs["pixel_values"].dtype:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        # What the last call fed the model, for logs and diagnostics.
        self.last_usage = {
            "prompt_tokens": int(inputs["input_ids"].shape[-1]),
            "images": len(images),
            "pixel_values": tuple(inputs["pixel_values"].shape) if "pixel_values" in inputs else None,
        }
        return inputs

    def choice_probabilities(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        """One forward pass; the distribution of the reply's first token over the choices."""
        import torch

        from agent.backends.choices import choice_token_ids, normalised

        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        ids = choice_token_ids(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], choices)
        inputs = self._inputs(messages)
        with self._lock, torch.inference_mode():
            logits = self.model(**inputs).logits[0, -1].float()
        probabilities = torch.softmax(logits, dim=-1)
        return normalised(lambda token: float(probabilities[token]), ids)

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 320, temperature: float = 0.0
    ) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        generate_kwargs: dict[str, Any] = dict(
            **inputs, streamer=streamer, max_new_tokens=max_tokens, do_sample=temperature > 0
        )
        if temperature > 0:
            generate_kwargs["temperature"] = temperature
        errors: list[BaseException] = []

        def _generate() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**generate_kwargs)
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=_generate, name="vlm-generate", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    if piece:
                        yield piece
            finally:
                worker.join()
        if errors:
            raise RuntimeError(f"VLM generation failed: {errors[0]}") from errors[0]
