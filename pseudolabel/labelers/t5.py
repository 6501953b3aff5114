"""T5-XXL encoder caption embeddings (up to 77 tokens × 4096): the t5_caption modality (input only).

transformers ``T5EncoderModel`` + the checkpoint's tokenizer; captions truncated to 77 tokens (EOS
included). Only the valid (non-padding) tokens are stored: ``embedding`` = n_tokens × d_model float16,
``n_tokens`` int16; the valid mask is ``arange(77) < n_tokens``. Samples without a caption fail with
reason ``no_caption``. Production: ``google/t5-v1_1-xxl`` encoder (Apache-2.0), loaded from the files that
repository publishes: its SentencePiece ``spiece.model`` (with ``sentencepiece``) and safetensors or
``pytorch_model*.bin`` shards (read with ``torch.load(weights_only=True)``). The tiny profile uses the project's
WordPiece-30k tokenizer (reference_data) so it needs no download.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from ..spec import CAPTION, Batch, SampleFailure
from .model_base import HFModelSettings, ModelLabeler, f16_bytes, host_f16

MAX_TOKENS = 77


class T5Settings(HFModelSettings):
    model: str = "google/t5-v1_1-xxl"
    max_tokens: int = MAX_TOKENS


class T5Labeler(ModelLabeler):
    name: ClassVar[str] = "t5"
    supports_autocast: ClassVar[bool] = True  # the forward runs in self.inference()
    outputs: ClassVar[tuple[str, ...]] = ("t5_caption",)
    needs: ClassVar[tuple[str, ...]] = (CAPTION,)
    code_version: ClassVar[str] = "1"
    Settings: ClassVar[type[HFModelSettings]] = T5Settings
    default_batch_size: ClassVar[int] = 16
    heavy_output: ClassVar[bool] = True

    tokenizer = None

    @staticmethod
    def tiny_tokenizer():
        from importlib import resources

        from transformers import PreTrainedTokenizerFast

        path = resources.files("fourm_core.reference_data") / "text_tokenizer_4m_wordpiece_30k.json"
        return PreTrainedTokenizerFast(tokenizer_file=str(path), pad_token="[PAD]", eos_token="[EOS]",
                                       unk_token="[UNK]")

    def build_tiny(self):
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel(T5Config(vocab_size=30_000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                                       feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=3))

    def build_full(self):
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel(T5Config(vocab_size=32_128, d_model=4096, d_kv=64, d_ff=10_240, num_layers=24,
                                       num_heads=64, feed_forward_proj="gated-gelu"))

    def load_dir(self, path: str):
        from transformers import AutoTokenizer, T5EncoderModel

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # safetensors if the directory has them, else the release's .bin shards through the safe unpickler
        return T5EncoderModel.from_pretrained(path, weights_only=True)

    def save(self, model, path: str) -> None:
        model.save_pretrained(path, safe_serialization=True)
        (self.tokenizer or self.tiny_tokenizer()).save_pretrained(path)

    def setup(self) -> None:
        super().setup()
        if self.tokenizer is None:
            self.tokenizer = self.tiny_tokenizer()

    def use_model(self, model) -> None:
        super().use_model(model)
        self.tokenizer = self.tokenizer or self.tiny_tokenizer()

    def schema(self) -> dict[str, pa.Schema]:
        return {"t5_caption": pa.schema([("embedding", pa.binary()), ("n_tokens", pa.int16()), ("dim", pa.int16())])}

    def label_batch(self, batch: Batch) -> list:
        have = [i for i, c in enumerate(batch.captions) if c]
        res: list = [SampleFailure("no_caption", "sample has no caption") for _ in batch.captions]
        if not have:
            return res
        enc = self.tokenizer([batch.captions[i] for i in have], max_length=self.settings.max_tokens, truncation=True,
                             padding="longest", return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        with self.inference():
            h = host_f16(self.model(input_ids=ids, attention_mask=mask).last_hidden_state)  # B × T × D
        lengths = enc["attention_mask"].sum(1).tolist()  # from the host copy: no wait for the GPU per caption
        for j, i in enumerate(have):
            n = lengths[j]
            res[i] = {"t5_caption": {"embedding": f16_bytes(h[j, :n]), "n_tokens": n, "dim": h.shape[-1]}}
        return res
