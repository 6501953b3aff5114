"""The shared WordPiece text tokenizer and the serialisers that turn structured labels into its text.

* :mod:`tokenize_stage.text.vocab` – the fixed head of the vocabulary (ids 0-4283, 4M-FACTS §2).
* :mod:`tokenize_stage.text.wordpiece` – load the reference tokenizer, train a new one, check the layout.
* :mod:`tokenize_stage.text.serialise` – det, color_palette, metadata, human_poses, sam_instance to and from
  text (4M-FACTS §3-§4). See docs/text-tokenizer.md.
"""
