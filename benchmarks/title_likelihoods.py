"""The title probe's (title x user) likelihood table, two ways side by side: the vocabulary's
logits at every position, pads included, for 1,024 pairs at once (the method until this
benchmark's commit, kept here as the reference) against `title_log_likelihoods` (logits at the
title's own words only, in cache-sized blocks of 1,024 positions).

    python benchmarks/title_likelihoods.py [--titles 100] [--users 500] [--vocab 5004] [--threads 1]

Sizes are those of a grid cell's probe on Amazon Scientific: 500 held-out users, a 5,000-word
title vocabulary, at most 16 words a title, lengths drawn like Scientific's titles (median 13 words
+ <eos>); `--titles` of the 500 titles are timed (the table's rows are independent, so the full
probe costs 500 / titles times as much). Checks that both tables agree.

Writes benchmarks/results/title_likelihoods.json with the commit, the machine and the date.
"""

from __future__ import annotations

import argparse

import torch

from bench_record import best_of, write_result
from karma.diagnostics.probes import TitleDecoder, TitleVocabulary, title_log_likelihoods

# Words (cut at 16) + <eos> per title: a spread like Scientific's (median 14 positions of 17,
# 77 % of the positions real; a quarter of the titles at the cut).
LENGTHS = [6, 8, 10, 12, 13, 14, 14, 15, 16, 17, 17, 17]


def full_vocabulary_reference(
    decoder: TitleDecoder, x: torch.Tensor, tokens: torch.Tensor, pairs: int = 1024
) -> torch.Tensor:
    """The earlier method: logits at every position (pads too) for `pairs` pairs at once."""
    users, target = len(x), tokens[:, 1:]
    real = (target != TitleVocabulary.PAD).float()
    out = torch.empty(len(tokens), users)
    per_batch = max(1, pairs // users)
    with torch.no_grad():
        h0 = torch.tanh(decoder.init_state(x))
        words = decoder.words(tokens[:, :-1])
        for v0 in range(0, len(tokens), per_batch):
            rows = slice(v0, min(len(tokens), v0 + per_batch))
            n = rows.stop - rows.start
            states, _ = decoder.gru(
                words[rows].repeat_interleave(users, 0), h0.repeat(n, 1).unsqueeze(0)
            )
            logits = decoder.out(states)
            picked = logits.gather(-1, target[rows].repeat_interleave(users, 0).unsqueeze(-1))
            logp = picked.squeeze(-1) - torch.logsumexp(logits, dim=-1)
            out[rows] = (logp * real[rows].repeat_interleave(users, 0)).sum(1).view(n, users)
    return out


def synthetic_titles(titles: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """(titles, 18) ids: <bos>, random words, <eos>, pads; lengths cycle through LENGTHS."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.full((titles, 18), TitleVocabulary.PAD, dtype=torch.long)
    for v in range(titles):
        length = LENGTHS[v % len(LENGTHS)]  # words + <eos>
        tokens[v, 0] = TitleVocabulary.BOS
        tokens[v, 1:length] = torch.randint(4, vocab, (length - 1,), generator=generator)
        tokens[v, length] = TitleVocabulary.EOS
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--titles", type=int, default=100)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--vocab", type=int, default=5004)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    decoder = TitleDecoder(128, args.vocab).eval()
    x = torch.randn(args.users, 128)
    tokens = synthetic_titles(args.titles, args.vocab)
    reference = full_vocabulary_reference(decoder, x, tokens)
    current = title_log_likelihoods(decoder, x, tokens)
    agreement = float((reference - current).abs().max())
    before = best_of(args.repeats, lambda: full_vocabulary_reference(decoder, x, tokens))
    after = best_of(args.repeats, lambda: title_log_likelihoods(decoder, x, tokens))
    scale = args.users / args.titles  # the probe's table is users x users
    real = float((tokens[:, 1:] != TitleVocabulary.PAD).float().mean())
    payload = {
        "titles": args.titles,
        "users": args.users,
        "vocab": args.vocab,
        "threads": args.threads,
        "real_position_share": round(real, 3),
        "full_vocabulary_s": round(before, 2),
        "blocked_own_words_s": round(after, 2),
        "speedup": round(before / after, 2),
        "full_probe_table_s": {
            "full_vocabulary": round(before * scale, 1),
            "blocked_own_words": round(after * scale, 1),
        },
        "max_abs_difference": agreement,
    }
    path = write_result("title_likelihoods", payload)
    print(payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
