"""Sampling semantics against hand-computed distributions (HF 4.57.3 processors and warpers)."""

from __future__ import annotations

import math

import pytest
import torch

from qwen3tts.sampling import SamplingParams, pick, process_talker_logits, repetition_penalty, suppress_mask, warp


def test_repetition_penalty_divides_positive_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = repetition_penalty(logits, seen, 1.05)
    assert torch.allclose(out, torch.tensor([[2.0 / 1.05, -2.0 * 1.05, 1.0, -1.0]]))


def test_talker_processing_suppress_and_min_length():
    V, eos = 3072, 2150
    sup = suppress_mask(V, eos)
    logits = torch.zeros(1, V)
    seen = torch.zeros(1, V, dtype=torch.bool)
    x0 = process_talker_logits(logits, seen, 0, sup, eos, 1.05)
    x2 = process_talker_logits(logits, seen, 2, sup, eos, 1.05)
    assert torch.isfinite(x2).sum() == 2049  # codes 0..2047 and EOS (talker.md §11.5)
    assert torch.isfinite(x2[0, :2048]).all() and torch.isfinite(x2[0, eos])
    assert x0[0, eos] == float("-inf") and torch.isfinite(x0).sum() == 2048  # EOS banned for the first 2 picks
    assert process_talker_logits(logits, seen, 1, sup, eos, 1.05)[0, eos] == float("-inf")
    # greedy picks the penalised id only if it still wins
    logits[0, 5], logits[0, 6] = 1.0, 0.99
    seen[0, 5] = True
    x = process_talker_logits(logits, seen, 3, sup, eos, 1.05)
    assert pick(x, SamplingParams(do_sample=False)).item() == 6


def test_temperature_topk_topp_hand_computed():
    logits = torch.tensor([[3.0, 2.0, 2.0, 1.0, 0.0]])
    # top-k 2 keeps ties with the k-th value: 3, 2, 2
    w = warp(logits, SamplingParams(True, 1.0, 2, 1.0))
    assert torch.isfinite(w).tolist() == [[True, True, True, False, False]]
    # temperature 0.5 doubles the logits
    assert torch.allclose(warp(logits, SamplingParams(True, 0.5, 0, 1.0)), logits * 2)
    # top-p: probabilities p = softmax; keep the smallest head set with mass >= top_p
    p = logits.softmax(-1)[0].tolist()
    top_p = p[0] + 0.5 * p[1]  # between "3.0 only" and "3.0 + one 2.0": HF drops the ascending tail while cum <= 1 - top_p
    w = warp(logits, SamplingParams(True, 1.0, 0, top_p))
    tail = sorted(p)
    cum = 0.0
    keep = []
    for v in tail:  # ascending
        cum += v
        keep.append(cum > 1 - top_p)
    expected_finite = sorted(zip(p, range(5)))
    exp = [None] * 5
    for (prob, idx), k in zip(expected_finite, keep):
        exp[idx] = k
    exp[0] = True
    assert torch.isfinite(w)[0].tolist() == exp
    # top_p keeps at least one id
    w = warp(logits, SamplingParams(True, 1.0, 0, 1e-9))
    assert torch.isfinite(w).sum() == 1 and torch.isfinite(w[0, 0])


def test_sampling_matches_softmax_distribution():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    params = SamplingParams(True, 0.9, 3, 1.0)  # top-3 of logits/0.9
    kept = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5]) / 0.9
    kept[1] = kept[2] = float("-inf")
    want = kept.softmax(-1)
    g = torch.Generator().manual_seed(0)
    n = 40000
    ids = pick(logits.expand(n, -1).clone(), params, g)
    freq = torch.bincount(ids, minlength=5).double() / n
    assert freq[1] == 0 and freq[2] == 0
    for i in (0, 3, 4):  # within 4 standard deviations
        sd = math.sqrt(want[i] * (1 - want[i]) / n)
        assert abs(freq[i] - want[i]) < 4 * sd, (i, freq[i], want[i])


def test_seeded_draws_reproduce():
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(1))
    p = SamplingParams(True, 0.9, 50, 0.95)
    a = pick(logits, p, torch.Generator().manual_seed(7))
    b = pick(logits, p, torch.Generator().manual_seed(7))
    c = pick(logits, p, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bad", [SamplingParams(True, 0.0), SamplingParams(True, 1.0, -1), SamplingParams(True, 1.0, 5, 0.0)])
def test_invalid_params(bad):
    with pytest.raises(ValueError):
        bad.validate()
