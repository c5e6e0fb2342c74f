"""helpers.clip (chapter 03): the symmetric contrastive loss, the clipped temperature, zero-shot classification,
retrieval recall, the tokenizer and the Flickr8k loader."""

import hashlib
import math
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import clip, contrastive
from helpers.data import ChecksumError, DataMissingError, md5sum
from helpers.transformer import Encoder

SHARED = Path("/work/shared/data")
HAVE_FLICKR = (SHARED / "flickr8k" / "Flickr8k_text" / "Flickr8k.token.txt").exists()


# ------------------------------------------------------------------ the loss


def test_loss_is_cross_entropy_on_the_similarity_matrix_in_both_directions():
    torch.manual_seed(0)
    u, v, s = torch.randn(7, 5), torch.randn(7, 5), 13.0
    L = s * F.normalize(u, dim=1) @ F.normalize(v, dim=1).T  # (N, N)
    rows = -torch.log_softmax(L, dim=1).diagonal().mean()
    cols = -torch.log_softmax(L, dim=0).diagonal().mean()
    assert torch.allclose(clip.clip_loss(u, v, s), 0.5 * (rows + cols), atol=1e-6)
    assert torch.allclose(clip.similarity_logits(u, v, s), L, atol=1e-6)


def test_loss_is_symmetric_and_ignores_embedding_norms():
    torch.manual_seed(1)
    u, v = torch.randn(6, 4), torch.randn(6, 4)
    assert torch.allclose(clip.clip_loss(u, v, 10.0), clip.clip_loss(v, u, 10.0), atol=1e-6)
    assert torch.allclose(clip.clip_loss(3 * u, 0.5 * v, 10.0), clip.clip_loss(u, v, 10.0), atol=1e-6)
    # only the row direction alone is NOT symmetric in general: the symmetrisation matters
    row = lambda a, b: F.cross_entropy(clip.similarity_logits(a, b, 10.0), torch.arange(6))
    assert not torch.allclose(row(u, v), row(v, u))


def test_loss_equals_the_mean_of_two_chapter02_info_nce_losses():
    torch.manual_seed(2)
    u, v, tau = torch.randn(8, 3), torch.randn(8, 3), 0.1
    expected = 0.5 * (contrastive.info_nce(u, v, tau) + contrastive.info_nce(v, u, tau))
    assert torch.allclose(clip.clip_loss(u, v, 1 / tau), expected, atol=1e-5)


def test_gradient_is_p_plus_q_minus_two_identity_over_2n():
    """Chapter 03, Eq. (2a): dLoss/dL = (P + Q - 2I) / 2N, pushed through clip_loss to its inputs by the chain rule."""
    torch.manual_seed(3)
    n = 5
    u, v = torch.randn(n, 4, requires_grad=True), torch.randn(n, 4, requires_grad=True)
    scale = clip.LogitScale(init_temperature=0.2)
    clip.clip_loss(u, v, scale()).backward()
    s = scale().detach()
    uh, vh = F.normalize(u.detach(), dim=1), F.normalize(v.detach(), dim=1)
    L = s * uh @ vh.T
    G = (L.softmax(1) + L.softmax(0) - 2 * torch.eye(n)) / (2 * n)  # Eq. (2a)
    # L_ij = s <u_i/|u_i|, v_j/|v_j|>, and d(u/|u|)/du = (I - uh uh^T) / |u|
    ref_u = s * (G @ vh - (G @ vh * uh).sum(1, keepdim=True) * uh) / u.detach().norm(dim=1, keepdim=True)
    ref_v = s * (G.T @ uh - (G.T @ uh * vh).sum(1, keepdim=True) * vh) / v.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(u.grad, ref_u)
    torch.testing.assert_close(v.grad, ref_v)
    # dL_ij/dt = L_ij for the log-scale t: the softmax-weighted mean logit minus the true pair's (Eq. (3))
    torch.testing.assert_close(scale.log_scale.grad, (G * L).sum())


def test_loss_limits():
    e = torch.eye(4)
    assert clip.clip_loss(e, e, 100.0).item() < 1e-6  # aligned and separated: confident and right
    same = torch.ones(4, 3)
    assert math.isclose(clip.clip_loss(same, same, 50.0).item(), math.log(4), rel_tol=1e-5)  # collapse: log N


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="paired"):
        clip.clip_loss(torch.randn(4, 3), torch.randn(5, 3), 1.0)
    with pytest.raises(ValueError, match="scale"):
        clip.clip_loss(torch.randn(4, 3), torch.randn(4, 3), -1.0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        clip.similarity_logits(torch.randn(4), torch.randn(4, 3))


# ------------------------------------------------------------------ the temperature


def test_logit_scale_initialisation_and_clipping():
    scale = clip.LogitScale(init_temperature=0.07, max_scale=100.0)
    assert math.isclose(scale().item(), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)             # an optimiser step overshot the cap
    scale.clip_()
    assert math.isclose(scale.log_scale.item(), math.log(100.0), rel_tol=1e-6)  # clip_ pulls it back
    assert math.isclose(scale().item(), 100.0, rel_tol=1e-5)
    with torch.no_grad():
        scale.log_scale.fill_(1.0)
    scale.clip_()
    assert scale.log_scale.item() == 1.0  # below the cap nothing changes


def test_scale_at_the_cap_can_come_back_down():
    """At the cap the gradient must still flow: a forward clamp would pass zero gradient there (torch >= 2.14)."""
    scale = clip.LogitScale(0.07, 100.0)
    with torch.no_grad():
        scale.log_scale.fill_(math.log(100.0))
    wrong = torch.eye(4).roll(1, dims=0) + 0.1       # every image is closest to another image's text
    clip.clip_loss(wrong, torch.eye(4), scale()).backward()
    assert scale.log_scale.grad.item() > 0     # descent lowers s from the cap


def test_temperature_grows_when_the_diagonal_wins():
    scale = clip.LogitScale(0.5, 100.0)
    e = torch.eye(4) + 0.1
    clip.clip_loss(e, e, scale()).backward()
    assert scale.log_scale.grad.item() < 0  # gradient descent raises s


def test_logit_scale_rejects_bad_values():
    with pytest.raises(ValueError, match="init_temperature"):
        clip.LogitScale(init_temperature=0.0)
    with pytest.raises(ValueError, match="max_scale"):
        clip.LogitScale(init_temperature=0.07, max_scale=5.0)


# ------------------------------------------------------------------ zero-shot classification


def _toy_encoder(dim: int = 8):
    g = torch.Generator().manual_seed(0)
    table = {}

    def encode(texts):
        out = []
        for t in texts:
            vec = torch.zeros(dim)
            for w in clip.WordTokenizer.split(t):
                if w not in table:
                    table[w] = torch.randn(dim, generator=g)
                vec = vec + table[w]
            out.append(vec)
        return torch.stack(out)

    return encode, table


def test_prompts_fill_templates_and_reject_bad_ones():
    assert clip.prompts("dog", ["a photo of a {}.", "{}"]) == ["a photo of a dog.", "dog"]
    with pytest.raises(ValueError, match="placeholder"):
        clip.prompts("dog", ["a photo"])
    with pytest.raises(ValueError, match="empty"):
        clip.prompts("dog", [])


def test_class_embeddings_are_normalised_means_of_normalised_prompts():
    encode, _ = _toy_encoder()
    templates = ["a photo of a {}", "a blurry picture of the {}", "{}"]
    w = clip.class_embeddings(encode, ["cat", "dog"], templates)
    assert w.shape == (2, 8)
    assert torch.allclose(w.norm(dim=1), torch.ones(2), atol=1e-6)
    by_hand = F.normalize(F.normalize(encode(clip.prompts("dog", templates)), dim=1).mean(0), dim=0)
    assert torch.allclose(w[1], by_hand, atol=1e-6)
    single = clip.class_embeddings(encode, ["cat"], ["{}"])
    assert torch.allclose(single[0], F.normalize(encode(["cat"])[0], dim=0), atol=1e-6)
    reordered = clip.class_embeddings(encode, ["cat", "dog"], templates[::-1])
    assert torch.allclose(w, reordered, atol=1e-6)  # an ensemble does not depend on template order


def test_zero_shot_predicts_the_nearest_class_text():
    encode, table = _toy_encoder()
    classes = ["cat", "dog", "ship"]
    w = clip.class_embeddings(encode, classes, ["{}"])
    images = torch.stack([table["ship"], table["cat"], 2 * table["dog"]])  # "images" at the class words
    pred = clip.zero_shot_logits(images, w).argmax(1)
    assert pred.tolist() == [2, 0, 1]
    assert clip.zero_shot_logits(images, w).shape == (3, 3)


def test_class_embeddings_reject_bad_input():
    encode, _ = _toy_encoder()
    with pytest.raises(ValueError, match="classnames"):
        clip.class_embeddings(encode, [], ["{}"])
    with pytest.raises(ValueError, match="returned shape"):
        clip.class_embeddings(lambda texts: torch.zeros(1, 8), ["cat"], ["{}", "a {}"])


# ------------------------------------------------------------------ retrieval


def test_retrieval_recall_perfect_and_known_values():
    img = torch.eye(3)                                    # 3 images
    txt = torch.cat([torch.eye(3), torch.eye(3)])         # 2 captions per image
    owner = torch.tensor([0, 1, 2, 0, 1, 2])
    r = clip.retrieval_recall(img, txt, owner, ks=(1, 2))
    assert all(v == 1.0 for v in r.values())
    # Image 0's two captions now point away from it and slightly toward image 1: both are found at the wrong
    # image (t2i loses 2 of 6), and image 0's nearest captions all belong to other images (i2t loses 1 of 3).
    txt2 = txt.clone()
    txt2[0] = txt2[3] = torch.tensor([-1.0, 0.2, 0.0])
    r2 = clip.retrieval_recall(img, txt2, owner, ks=(1,))
    assert r2["t2i_R@1"] == pytest.approx(4 / 6)
    assert r2["i2t_R@1"] == pytest.approx(2 / 3)


def test_retrieval_recall_at_k_counts_hits_below_the_top():
    img = torch.eye(3)
    txt = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.5, 0.866], [0.0, 0.0, 1.0]])  # caption i describes image i
    # image 1's nearest caption is caption 0 (0.8 > 0.5), its own comes second; captions 0 and 1 find their
    # image second too (0.6 < 0.8, 0.5 < 0.866)
    r = clip.retrieval_recall(img, txt, torch.tensor([0, 1, 2]), ks=(1, 2))
    assert r == pytest.approx({"i2t_R@1": 2 / 3, "t2i_R@1": 1 / 3, "i2t_R@2": 1.0, "t2i_R@2": 1.0})


def test_retrieval_recall_rejects_bad_owner():
    with pytest.raises(ValueError, match="text_to_image"):
        clip.retrieval_recall(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="float32"):  # image indices, not scores
        clip.retrieval_recall(torch.eye(2), torch.eye(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="ks"):
        clip.retrieval_recall(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), ks=(0,))


# ------------------------------------------------------------------ tokenizer and <eos> pooling


def test_tokenizer_encode_layout():
    tok = clip.WordTokenizer.fit(["A dog runs.", "a dog's ball", "a cat"])
    assert tok.itos[:4] == list(clip.WordTokenizer.SPECIALS) and tok.itos[4] == "a"  # most frequent first
    ids, eos = tok.encode(["a dog runs", "a zebra", "a dog runs a dog runs"], context=6)
    assert ids.shape == (3, 6) and eos.tolist() == [4, 3, 5]
    assert ids[0].tolist() == [2, tok.stoi["a"], tok.stoi["dog"], tok.stoi["runs"], 3, 0]
    assert ids[1, 2].item() == tok.UNK
    assert ids[2, -1].item() == tok.EOS  # truncated: the first context-2 words, then <eos>
    assert tok.decode(ids[0].tolist()) == "a dog runs"


def test_tokenizer_rejects_bad_input():
    tok = clip.WordTokenizer.fit(["a dog"])
    with pytest.raises(ValueError, match="context"):
        tok.encode(["a dog"], context=2)
    with pytest.raises(ValueError, match="single string"):
        tok.encode("a dog", context=8)
    with pytest.raises(ValueError, match="min_count"):
        clip.WordTokenizer.fit(["a"], min_count=0)


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda: clip.WordTokenizer(["dog", "cat", "dog"]), r"duplicate words: \['dog'\]", id="duplicate-words"),
    pytest.param(lambda: clip.WordTokenizer.split(None), r"expected a str, got NoneType: None", id="split-none"),
    pytest.param(lambda: clip.WordTokenizer.fit(["a dog"]).encode(["a dog", 7], context=8), r"got int: 7",
                 id="encode-a-number"),
])
def test_tokenizer_invalid_arguments_raise_value_errors_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_tokenizer_length_counts_the_specials_and_the_words():
    assert len(clip.WordTokenizer()) == 4
    tok = clip.WordTokenizer.fit(["A dog, a cat.", "the dog"])
    assert len(tok) == len(tok.itos) == 4 + len({"a", "dog", "cat", "the"})


def test_causal_encoder_pooled_at_eos_ignores_padding():
    torch.manual_seed(0)
    enc = Encoder(16, 2, 2, causal=True).eval()
    x = torch.randn(1, 8, 16)
    y = x.clone()
    y[:, 5:] = torch.randn(1, 3, 16)  # change everything after the <eos> at position 4
    with torch.no_grad():
        assert torch.allclose(enc(x)[0, 4], enc(y)[0, 4], atol=1e-5)
        assert not torch.allclose(enc(x)[0, 6], enc(y)[0, 6])


# ------------------------------------------------------------------ Flickr8k parsing and loading


def test_parse_captions_numbers_and_the_jpg1_quirk():
    text = ("b.jpg#1\tsecond of b\n"
            "b.jpg#0\tfirst of b .\n"
            "2258277193_586949ec62.jpg.1#0\tpeople waiting for the subway\n"
            "2258277193_586949ec62.jpg#1\tSome people looking out windows .\n\n")
    caps = clip.parse_captions(text)
    assert caps["b.jpg"] == ["first of b .", "second of b"]  # ordered by the #n number
    assert caps["2258277193_586949ec62.jpg"] == ["people waiting for the subway", "Some people looking out windows ."]
    assert not any(k.endswith(".1") for k in caps)


def test_parse_captions_rejects_malformed_lines():
    with pytest.raises(ValueError, match="line 2"):
        clip.parse_captions("a.jpg#0\tok\na.jpg caption without tab or number\n")
    with pytest.raises(ValueError, match="line 1"):
        clip.parse_captions("a.jpg#x\tbad number\n")


def test_parse_split():
    assert clip.parse_split("a.jpg\n\n b.jpg \n") == ["a.jpg", "b.jpg"]


def test_load_flickr8k_missing_file_names_it_and_course_data(data_dir, no_network):
    with pytest.raises(DataMissingError) as err:
        clip.load_flickr8k("test")
    msg = str(err.value)
    assert "Flickr8k.token.txt" in msg and "COURSE_DATA" in msg and str(data_dir) in msg


def test_load_flickr8k_rejects_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="split"):
        clip.load_flickr8k("validation")
    with pytest.raises(ValueError, match="image_size"):
        clip.load_flickr8k("test", image_size=4)


@pytest.mark.skipif(not HAVE_FLICKR, reason="course data not available")
def test_load_flickr8k_missing_image_is_named(data_dir, no_network):
    shutil.copytree(SHARED / "flickr8k" / "Flickr8k_text", data_dir / "flickr8k" / "Flickr8k_text")
    (data_dir / "flickr8k" / "images").mkdir()
    with pytest.raises(DataMissingError) as err:
        clip.load_flickr8k("test")
    assert "1000268201_693b08cb0e.jpg" in str(err.value) and "COURSE_DATA" in str(err.value)


@pytest.mark.skipif(not HAVE_FLICKR, reason="course data not available")
def test_load_flickr8k_real_splits(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("COURSE_DATA", str(SHARED))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    sizes, fresh = {}, {}
    for split in clip.FLICKR8K_SPLITS:
        d = clip.load_flickr8k(split, image_size=16)     # decoded from the JPEGs (empty cache)
        sizes[split], fresh[split] = len(d), d.images
        assert (d.images.float().std(dim=(0, 2, 3)) > 10).all()   # real pixels in every channel, not a blank decode
        assert d.images.shape == (len(d), 3, 16, 16) and d.images.dtype == torch.uint8
        assert all(len(c) == 5 for c in d.captions)
        texts, owner = d.pairs()
        assert len(texts) == 5 * len(d) and owner.tolist()[:6] == [0, 0, 0, 0, 0, 1]
    assert sizes == {"train": 753, "dev": 113, "test": 125}
    assert len(list((tmp_path / "cache").rglob("flickr8k-*.pt"))) == 3    # one cache file per split
    for split in ("test", "train"):                    # from the cache: identical to the fresh decode
        assert torch.equal(clip.load_flickr8k(split, image_size=16).images, fresh[split])
    assert clip.load_flickr8k("test", image_size=24).images.shape == (125, 3, 24, 24)  # another size, another file
    present = sorted(p.name for p in (SHARED / "flickr8k" / "images").iterdir())
    captions = clip.parse_captions((SHARED / "flickr8k/Flickr8k_text/Flickr8k.token.txt").read_text())
    assert clip.flickr8k_image_names(captions) == present


def _official_zips(root: Path, monkeypatch, drop: str | None = None) -> None:
    """Pack the course's Flickr8k files the way the official release's two zips hold them (with a macOS
    metadata decoy), put them in ``root/flickr8k`` and make their MD5s the expected ones."""
    src, dest = SHARED / "flickr8k", root / "flickr8k"
    dest.mkdir(parents=True)
    with zipfile.ZipFile(dest / "Flickr8k_text.zip", "w") as zf:
        for f in ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
                  "Flickr_8k.testImages.txt"):
            zf.write(src / "Flickr8k_text" / f, f)
            zf.writestr(f"__MACOSX/{f}", b"not the file")  # after the real one: would win without the filter
    with zipfile.ZipFile(dest / "Flickr8k_Dataset.zip", "w") as zf:  # stored: the JPEGs do not compress
        for p in sorted((src / "images").iterdir()):
            if p.name != drop:
                zf.write(p, f"Flicker8k_Dataset/{p.name}")
    monkeypatch.setattr(clip, "_FLICKR8K_TEXT_ZIP", ("Flickr8k_text.zip", md5sum(dest / "Flickr8k_text.zip")))
    monkeypatch.setattr(clip, "_FLICKR8K_IMAGES_ZIP", ("Flickr8k_Dataset.zip", md5sum(dest / "Flickr8k_Dataset.zip")))


@pytest.mark.skipif(not HAVE_FLICKR, reason="course data not available")
def test_load_flickr8k_from_the_official_zips_equals_the_course_copy(data_dir, monkeypatch, no_network):
    _official_zips(data_dir, monkeypatch)
    from_zips = clip.load_flickr8k("test", image_size=16)
    assert not (data_dir / "flickr8k" / "images").exists()   # read in place, nothing extracted
    monkeypatch.setenv("COURSE_DATA", str(SHARED))
    course = clip.load_flickr8k("test", image_size=16)
    assert from_zips.names == course.names and from_zips.captions == course.captions
    assert torch.equal(from_zips.images, course.images)      # same bytes here, so the same pixels
    assert len(list((data_dir.parent / "cache").rglob("flickr8k-*-test-16.pt"))) == 2   # one cache per source


@pytest.mark.skipif(not HAVE_FLICKR, reason="course data not available")
def test_load_flickr8k_official_zips_are_checked(data_dir, monkeypatch, no_network):
    _official_zips(data_dir, monkeypatch, drop="1000268201_693b08cb0e.jpg")
    with pytest.raises(ChecksumError, match="1000268201_693b08cb0e.jpg"):   # an image missing from the zip
        clip.load_flickr8k("test", image_size=16)
    monkeypatch.setattr(clip, "_FLICKR8K_TEXT_ZIP", ("Flickr8k_text.zip", "0" * 32))
    with pytest.raises(ChecksumError, match="Flickr8k_text.zip"):         # a zip with the wrong MD5
        clip.load_flickr8k("test", image_size=16)


def test_load_flickr8k_missing_names_both_layouts(data_dir, no_network):
    with pytest.raises(DataMissingError) as err:
        clip.load_flickr8k("test")
    msg = str(err.value)
    assert "Flickr8k_text.zip" in msg and "Flickr8k_Dataset.zip" in msg and "images/" in msg


def _tiny_text_zip(root: Path, monkeypatch, members: dict) -> None:
    """A stand-in for the official Flickr8k_text.zip holding ``members`` (name -> text), its MD5 the expected one."""
    (root / "flickr8k").mkdir(parents=True, exist_ok=True)
    path = root / "flickr8k" / "Flickr8k_text.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    monkeypatch.setattr(clip, "_FLICKR8K_TEXT_ZIP", ("Flickr8k_text.zip", md5sum(path)))


def test_load_flickr8k_official_text_zip_without_a_member_names_it(data_dir, monkeypatch, no_network):
    _tiny_text_zip(data_dir, monkeypatch, {"readme.txt": "no captions here"})
    with pytest.raises(ChecksumError, match=r"Flickr8k_text\.zip has no Flickr8k\.token\.txt"):
        clip.load_flickr8k("test")


def test_load_flickr8k_course_images_with_the_wrong_md5_are_refused(data_dir, monkeypatch, no_network):
    """Two made-up images (whose MD5 cannot be the course's): the error names the MD5 found and the expected one."""
    _tiny_text_zip(data_dir, monkeypatch, {
        "Flickr8k.token.txt": "a.jpg#0\ta dog\nb.jpg#0\ta cat\n", "Flickr_8k.trainImages.txt": "a.jpg\n",
        "Flickr_8k.devImages.txt": "b.jpg\n", "Flickr_8k.testImages.txt": "b.jpg\n"})
    images = data_dir / "flickr8k" / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"first")
    (images / "b.jpg").write_bytes(b"second")
    found = hashlib.md5(b"firstsecond").hexdigest()                    # concatenated in name order
    with pytest.raises(ChecksumError, match=f"have MD5 {found} .*expected {clip._FLICKR8K_IMAGES_MD5}"):
        clip.load_flickr8k("test")
    assert not list((data_dir.parent / "cache").rglob("flickr8k-*.pt"))   # nothing cached
