import pytest
import torch
from PIL import Image

from zrcore import ScoreBins
from zrcore.models import ARCHS, ScoreDecoder, build_tiny_reward_model, build_tiny_tokenizer
from zrcore.ops import score_distribution_from_logits

PROMPTS = ["two red circles on a white background", "a blue square", "three yellow triangles on a black background"]


def _images(sizes=((84, 84), (56, 112), (112, 56)), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8)
        out.append(Image.fromarray(arr.numpy()))
    return out


@pytest.fixture(scope="module", params=ARCHS)
def rm(request):
    torch.manual_seed(0)
    return build_tiny_reward_model(request.param, "student", seed=0)


def _naive_score(rm, prompts, images, dim):
    """Full logits at the last position of each unpadded example, gather the score columns, softmax."""
    outs = []
    for p, img in zip(prompts, images):
        feats = rm.image_inputs([img])
        inputs = rm.tensor_inputs(*rm.left_pad(rm._prompt_ids([p], feats["image_grid_thw"], dim, False)), feats)
        logits = rm.model(**inputs, use_cache=False).logits[:, -1]
        outs.append(score_distribution_from_logits(logits, rm.decoder.token_ids, rm.bins.values))
    return torch.cat([o.log_probs for o in outs]), torch.cat([o.mean for o in outs])


def test_score_ids_are_copied_to_the_device_once(rm, monkeypatch):
    """The score token ids reach the op as one cached tensor per device: a fresh copy per call would miss the op's
    per-tensor value check cache and read the ids back from the device (a synchronisation) on every score call."""
    from torch.overrides import TorchFunctionMode

    ids = rm.decoder.token_ids

    class CountCopies(TorchFunctionMode):
        copies = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.to and args and args[0] is ids:
                CountCopies.copies += 1
            return func(*args, **(kwargs or {}))

    seen = []
    monkeypatch.setattr("zrcore.models.reward_model.score_distribution",
                        lambda hidden, weight, token_ids, values, **kw: seen.append((token_ids, values)))
    hidden = torch.empty(2, rm.model.config.get_text_config().hidden_size, device="meta")  # a device unlike ids'
    with CountCopies():
        for _ in range(3):
            rm._distribution(hidden)
    assert CountCopies.copies <= 1
    assert all(t is seen[0][0] and v is seen[0][1] for t, v in seen)
    assert seen[0][0].device.type == "meta"


def test_score_matches_naive_full_logits_and_batching(rm):
    images = _images()
    with torch.no_grad():
        q = rm.score(PROMPTS, images, "alignment")
        lp, mean = _naive_score(rm, PROMPTS, images, "alignment")
        single = [rm.score([p], [im], "alignment") for p, im in zip(PROMPTS, images)]
    assert q.log_probs.shape == (3, 9)
    torch.testing.assert_close(q.log_probs, lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q.mean, mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q.mean, torch.cat([s.mean for s in single]), atol=1e-5, rtol=1e-5)


def test_score_never_applies_the_lm_head(rm):
    calls = []
    handle = rm.model.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            rm.score(PROMPTS[:1], _images()[:1], "realism")
    finally:
        handle.remove()
    assert calls == []  # only the K score rows are used, through score_distribution


def test_score_pixels_matches_official_processor_and_finite_differences(rm):
    factor = rm.geometry.factor
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (2, 3, 2 * factor, 2 * factor), generator=g).float() / 255
    pil = [Image.fromarray((p.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()) for p in pixels]
    with torch.no_grad():
        a = rm.score_pixels(PROMPTS[:2], pixels, "aesthetics")
        b = rm.score(PROMPTS[:2], pil, "aesthetics")
    torch.testing.assert_close(a.log_probs, b.log_probs, atol=1e-4, rtol=1e-4)
    # pixel gradient against a central finite difference along a random direction, in float64 (the vision towers
    # compute their rotary embeddings in float32, so single-pixel differences drown in rounding)
    x = pixels[:1].double().requires_grad_()
    direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
    rm.model.double()
    try:
        f = lambda t: rm.score_pixels(PROMPTS[:1], t, "aesthetics").mean.sum()
        f(x).backward()
        analytic = float((x.grad * direction).sum())
        eps = 1e-3
        with torch.no_grad():
            numeric = float((f(x.detach() + eps * direction) - f(x.detach() - eps * direction)) / (2 * eps))
        assert abs(analytic - numeric) <= 2e-2 * abs(numeric) + 1e-6, (analytic, numeric)
    finally:
        rm.model.float()


def _spy_generate(rm, calls):
    original = rm.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    rm.model.generate = spy
    return original


@pytest.mark.parametrize("backend", ["native", "generate"])
def test_judge_returns_distributions_and_its_behaviour_logprobs(rm, backend):
    from zrcore.models.rollout import HFGenerateBackend

    calls = []
    original = _spy_generate(rm, calls)
    try:
        j = rm.judge(PROMPTS[:2], _images()[:2], "plausibility", num_samples=3, max_reasoning_tokens=6,
                     temperature=0.9, seeds=range(6), backend=HFGenerateBackend() if backend == "generate" else None)
    finally:
        rm.model.generate = original
    # nothing asks generate for per-step logits or scores; the native sampler does not call it
    assert all(not kw.get(k) for kw in calls for k in ("output_logits", "output_scores"))
    assert bool(calls) == (backend == "generate")
    assert j.distribution.log_probs.shape == (2, 3, 9) and j.distribution.mean.shape == (2, 3)
    torch.testing.assert_close(j.distribution.log_probs.exp().sum(-1), torch.ones(2, 3), atol=1e-5, rtol=0)
    assert ((j.distribution.mean >= 1) & (j.distribution.mean <= 5)).all()
    # the completion is the reasoning and, where the trace ended, its end-of-turn
    assert len(j.texts) == 6
    assert j.completion_mask.sum(-1).tolist() == [len(r) + int(not t) for r, t in zip(j.reasoning_ids, j.truncated)]
    # the behaviour log-probs are those of the full-vocabulary softmax at T (suppressed tokens excluded) on the
    # returned sequences; the module's own token log-probs agree where no suppressed token carries mass
    with torch.no_grad():
        inputs = rm.tensor_inputs(j.sequences, j.attention_mask, j.image_inputs)
        logits = rm.model(**inputs, use_cache=False).logits.float()
        lp = rm.token_logprobs(j.sequences, j.attention_mask, j.image_inputs, j.completion_mask, temperature=0.9)
    logits[..., rm.suppressed_ids] = float("-inf")
    ref = torch.log_softmax(logits / 0.9, -1)
    rows, cols = j.completion_mask.nonzero(as_tuple=True)
    expected = ref[rows, cols - 1, j.sequences[rows, cols]]
    torch.testing.assert_close(j.behaviour_logprobs[rows, cols], expected, atol=1e-4, rtol=1e-4)
    full = torch.log_softmax(rm.model(**inputs, use_cache=False).logits.float().detach() / 0.9, -1)
    torch.testing.assert_close(lp[rows, cols], full[rows, cols - 1, j.sequences[rows, cols]], atol=1e-4, rtol=1e-4)


def test_judge_rows_do_not_depend_on_their_batch(rm):
    """A row's trace is a function of its seed: split into calls of one row, or judged alone, it is the same."""
    images = _images()
    dims = ["realism", "alignment", "aesthetics"]
    whole = rm.judge(PROMPTS, images, dims, num_samples=2, max_reasoning_tokens=5, seeds=[10, 11, 12, 13, 14, 15])
    split = rm.judge(PROMPTS, images, dims, num_samples=2, max_reasoning_tokens=5, seeds=[10, 11, 12, 13, 14, 15],
                     rollout_batch_size=1)
    alone = rm.judge(PROMPTS[2:], images[2:], dims[2:], num_samples=2, max_reasoning_tokens=5, seeds=[14, 15])
    assert [r.tolist() for r in whole.reasoning_ids] == [r.tolist() for r in split.reasoning_ids]
    assert [r.tolist() for r in whole.reasoning_ids[4:]] == [r.tolist() for r in alone.reasoning_ids]
    torch.testing.assert_close(whole.distribution.mean[2], alone.distribution.mean[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="seeds: need one per row"):
        rm.judge(PROMPTS[:1], images[:1], "realism", num_samples=2, seeds=[1])
    with pytest.raises(ValueError, match="rollout_batch_size"):
        rm.judge(PROMPTS[:1], images[:1], "realism", rollout_batch_size=-1)


class ScriptedBackend:
    """A rollout backend that returns given token lists (behaviour log-probs -0.5 each)."""

    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def sample(self, rm, request):
        from zrcore.models.rollout import SampledTokens

        assert len(request.prompt_ids) == len(self.rows)
        return SampledTokens([list(r) for r in self.rows], [[-0.5] * len(r) for r in self.rows])


def test_judge_puts_a_sampled_end_of_turn_in_the_completion(rm):
    """An ended trace: reasoning + end-of-turn are the completion, then the suffix; a cut trace: its tokens are the
    completion, then a forced end-of-turn (outside the completion) and the suffix. Both read q after the suffix."""
    eot, suffix = rm.end_of_turn_id, rm.score_suffix_ids
    words = rm.tokenizer.encode("sharp. clean.", add_special_tokens=False)
    backend = ScriptedBackend([words + [eot], words[:3]])
    j = rm.judge(PROMPTS[:1], _images()[:1], "realism", num_samples=2, max_reasoning_tokens=3 + len(words),
                 seeds=[1, 2], backend=backend)
    assert j.truncated.tolist() == [False, True]
    assert [r.tolist() for r in j.reasoning_ids] == [words, words[:3]]
    ended = j.sequences[0][j.attention_mask[0].bool()].tolist()
    cut = j.sequences[1][j.attention_mask[1].bool()].tolist()
    assert j.sequences[0][j.completion_mask[0]].tolist() == words + [eot]
    assert ended[len(ended) - len(suffix) - len(words) - 1:] == words + [eot] + suffix
    assert j.sequences[1][j.completion_mask[1]].tolist() == words[:3]
    assert cut[len(cut) - len(suffix) - 4:] == words[:3] + [eot] + suffix
    # behaviour log-probs on exactly the completion tokens
    assert j.behaviour_logprobs[j.completion_mask].tolist() == [-0.5] * (len(words) + 1 + 3)
    assert (j.behaviour_logprobs[~j.completion_mask] == 0).all()
    # the end-of-turn gets a policy log-prob (a gradient) like every other emitted token
    lp = rm.token_logprobs(j.sequences, j.attention_mask, j.image_inputs, j.completion_mask)
    eot_col = j.completion_mask[0].nonzero()[-1, 0]
    assert j.sequences[0, eot_col] == eot and lp[0, eot_col] < 0
    lp[0, eot_col].backward()
    assert rm.model.get_output_embeddings().weight.grad[eot].abs().sum() > 0
    rm.zero_grad()


def test_reasoned_inputs_put_a_given_reasoning_where_judge_puts_a_sampled_one(rm):
    images = _images()[:2]
    texts = ["two red circles on a white background. sharp.", ""]
    ids, mask, comp, img = rm.reasoned_inputs(PROMPTS[:2], images, ["realism", "alignment"], texts)
    words = rm.tokenizer.encode(texts[0], add_special_tokens=False)
    j = rm.judge(PROMPTS[:1], images[:1], "realism", num_samples=1, max_reasoning_tokens=len(words) + 1, seeds=[3],
                 backend=ScriptedBackend([words + [rm.end_of_turn_id]]))
    suffix = rm.score_suffix_ids
    for row, text in enumerate(texts):
        seq = ids[row][mask[row].bool()].tolist()
        body = ids[row][comp[row]].tolist()
        assert body[-1] == rm.end_of_turn_id and rm.tokenizer.decode(body[:-1]) == text
        assert seq[len(seq) - len(suffix):] == suffix
        if row == 0:  # the same sequence and completion as a judged trace of that text
            assert seq == j.sequences[0][j.attention_mask[0].bool()].tolist()
            assert body == j.sequences[0][j.completion_mask[0]].tolist()
    torch.testing.assert_close(img["image_grid_thw"], rm.image_inputs(images)["image_grid_thw"])
    with torch.no_grad():
        q = rm(ids, mask, img).distribution
    assert q.mean.shape == (2,)
    with pytest.raises(ValueError, match="reasonings: need one string per input"):
        rm.reasoned_inputs(PROMPTS[:2], images, "realism", texts[:1])


def test_forward_entry_points_agree(rm):
    """score, forward on score_inputs, and policy_forward / token_logprobs on a judgement compute the same thing."""
    images = _images()[:2]
    with torch.no_grad():
        q = rm.score(PROMPTS[:2], images, ["realism", "alignment"])
        out = rm(*rm.score_inputs(PROMPTS[:2], images, ["realism", "alignment"]))
        j = rm.judge(PROMPTS[:1], images[:1], "realism", num_samples=2, max_reasoning_tokens=4, seeds=[1, 2])
        pf = rm.policy_forward(j, temperature=1.0)
        lp = rm.token_logprobs(j.sequences, j.attention_mask, j.image_inputs, j.completion_mask)
    torch.testing.assert_close(out.distribution.log_probs, q.log_probs)
    assert out.logps is None
    torch.testing.assert_close(pf.logps, lp)
    torch.testing.assert_close(pf.distribution.mean, j.distribution.mean.reshape(-1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="dimension: got 3 dimensions for 2 prompts"):
        rm.score(PROMPTS[:2], images, ["realism"] * 3)


def test_judge_when_every_trace_hits_the_limit(rm):
    # no trace ends (the backend never emits end-of-turn): every trace is cut at the limit, end-of-turn and the
    # scoring suffix are forced, and each yields a distribution
    words = rm.tokenizer.encode("sharp. clean.", add_special_tokens=False)[:4]
    j = rm.judge(PROMPTS[:1], _images()[:1], "alignment", num_samples=2, max_reasoning_tokens=4,
                 backend=ScriptedBackend([words, words]))
    assert j.truncated.all() and all(len(r) == 4 for r in j.reasoning_ids)
    assert (j.completion_mask.sum(-1) == 4).all()
    assert torch.isfinite(j.distribution.log_probs).all()


def test_bad_inputs(rm, tmp_path):
    with pytest.raises(ValueError, match="unknown dimension 'beauty'"):
        rm.score(PROMPTS[:1], _images()[:1], "beauty")
    with pytest.raises(ValueError, match="2 prompts but 1 images"):
        rm.score(PROMPTS[:2], _images()[:1], "alignment")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"images\[1\]: cannot read image file"):
        rm.score(PROMPTS[:2], [_images()[0], str(bad)], "alignment")


def test_score_decoder_rejects_multi_token_labels():
    tok = build_tiny_tokenizer()
    dec = ScoreDecoder(tok, ScoreBins.half_points())
    assert len(dec.token_ids) == 9 and dec.parse("I think 3.5 fits") == 3.5 and dec.parse("no score") is None
    with pytest.raises(ValueError, match="'excellent' is .* tokens"):
        ScoreDecoder(tok, ScoreBins([1, 2], labels=["1", "excellent"]))


def test_save_and_load_roundtrip(tmp_path):
    rm = build_tiny_reward_model("qwen2_vl", "student", seed=3)
    rm.save_pretrained(tmp_path / "ckpt")
    from zrcore.models import RewardModel

    again = RewardModel.from_pretrained(tmp_path / "ckpt")
    img = _images()[:1]
    with torch.no_grad():
        torch.testing.assert_close(rm.score(PROMPTS[:1], img, "realism").mean,
                                   again.score(PROMPTS[:1], img, "realism").mean)
