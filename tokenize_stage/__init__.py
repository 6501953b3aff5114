"""Tokenizers (VQ-VAE, diffusion decoders, MLP+Memcodes, WordPiece), their training, and pre-tokenization.

* ``tokenize_stage.models``          from_pretrained / build_tokenizer (models.hub), save_pretrained, encode / decode
* ``tokenize_stage.registry``        tokenizer_config(name, profile) derived from the modality registry
* ``tokenize_stage.normalize``       raw pseudo-label arrays -> normalised tensors (4M-FACTS §1)
* ``tokenize_stage.train_tokenizer`` train_tokenizer(store, dataset, TrainTokenizerConfig) -> committed artifact
* ``tokenize_stage.stage``           STAGE: pre-tokenization StageSpec (tokens/<modality>, tokens/_crops)
* ``python -m tokenize_stage``       list | synth | train

See docs/tokenizers.md.
"""
