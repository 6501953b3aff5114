"""How long training the 30k WordPiece vocabulary takes, and how fast the serialisers and the tokenizer run.

    PYTHONPATH=. python bench/bench_wordpiece.py [--mb 5] [--threads 1] [CORPUS.txt ...]

Without corpus files it builds a synthetic caption corpus offline: words of the reference vocabulary drawn
with Zipf-like frequencies (so the merge statistics resemble natural text), ``--mb`` megabytes of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_corpus(megabytes: float, seed: int = 0) -> list[str]:
    import numpy as np

    from tokenize_stage.text.wordpiece import load_tokenizer

    words = sorted(w for w in load_tokenizer().get_vocab() if w.isalpha() and len(w) > 1)
    g = np.random.default_rng(seed)
    g.shuffle(words)
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.05
    p /= p.sum()
    # one word in ten is a fresh pseudo-word (names, typos, rare compounds) made of common syllables, so the
    # corpus has an open vocabulary like real captions and the trainer can fill all 30k entries
    syllables = [w for w in words if 2 <= len(w) <= 4][:400]
    lines, size = [], 0
    while size < megabytes * 1e6:
        idx = g.choice(len(words), size=(1000, 12), p=p)
        fresh = g.random((1000, 12)) < 0.1
        for row, new in zip(idx, fresh):
            n = g.integers(5, 13)
            line = " ".join("".join(g.choice(syllables, size=g.integers(2, 4))) if nw else words[i]
                            for i, nw in zip(row[:n], new[:n])) + "."
            lines.append(line)
            size += len(line) + 1
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", nargs="*")
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--vocab-size", type=int, default=30_000)
    ap.add_argument("--threads", type=int, default=1, help="RAYON_NUM_THREADS for the Rust trainer")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before tokenizers starts its thread pool

    import numpy as np

    from tests.tokenize_text import samples
    from tokenize_stage.text.serialise import SERIALISERS
    from tokenize_stage.text.wordpiece import load_tokenizer, train_wordpiece

    if args.corpus:
        lines = [ln for p in args.corpus for ln in Path(p).read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        lines = synthetic_corpus(args.mb)
    mb = sum(len(s) + 1 for s in lines) / 1e6
    t0 = time.perf_counter()
    tok = train_wordpiece(lines, args.vocab_size)
    dt = time.perf_counter() - t0
    print(f"train WordPiece {tok.get_vocab_size()} entries on {mb:.1f} MB ({len(lines)} lines), "
          f"{args.threads} thread(s): {dt:.1f} s ({mb / dt:.2f} MB/s)")

    ref = load_tokenizer()
    g = np.random.default_rng(0)
    makers = {"det": samples.detections, "color_palette": samples.palette_set, "metadata": samples.metadata,
              "human_poses": samples.human_poses, "sam_instance": samples.sam_instances}
    for name, make in makers.items():
        xs = [make(g) for _ in range(300)]
        t0 = time.perf_counter()
        texts = [SERIALISERS[name].serialise(x, g) for x in xs]
        t_ser = (time.perf_counter() - t0) / len(xs)
        t0 = time.perf_counter()
        for t in texts:
            SERIALISERS[name].parse(t)
        t_parse = (time.perf_counter() - t0) / len(xs)
        t0 = time.perf_counter()
        n_tok = sum(len(e.ids) for e in ref.encode_batch(texts))
        t_enc = (time.perf_counter() - t0) / len(xs)
        print(f"{name:14s} serialise {t_ser * 1e6:7.0f} us  parse {t_parse * 1e6:7.0f} us  "
              f"encode {t_enc * 1e6:6.0f} us  mean {n_tok / len(xs):5.1f} tokens/sample")


if __name__ == "__main__":
    main()
