"""helpers.speech (chapter 07): loaders, mel filterbank, STFT parity, Griffin-Lim, pitch, SALN, length regulator."""

import hashlib
import io
import math
import tarfile
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import speech as S
from helpers.data import ChecksumError, DataMissingError, data_root

REAL = data_root()  # the real data root, read before any fixture points COURSE_DATA elsewhere


# ------------------------------------------------------------------ wav I/O and the FSDD loader


def test_wav_round_trip(tmp_path):
    x = torch.sin(torch.linspace(0, 200, 4000)) * 0.5
    S.write_wav(tmp_path / "a.wav", x, 8000)
    y, rate = S.read_wav(tmp_path / "a.wav")
    assert rate == 8000 and y.shape == x.shape and y.dtype == torch.float32
    assert torch.allclose(x, y, atol=1 / 32768)


def test_read_wav_rejects_stereo_and_8bit(tmp_path):
    for channels, width in ((2, 2), (1, 1)):
        path = tmp_path / f"bad{channels}{width}.wav"
        with wave.open(str(path), "wb") as f:
            f.setnchannels(channels)
            f.setsampwidth(width)
            f.setframerate(8000)
            f.writeframes(b"\x00" * 400)
        with pytest.raises(ValueError, match=str(path.name)):
            S.read_wav(path)


def test_missing_fsdd_names_the_file_and_course_data(data_dir, no_network):
    with pytest.raises(DataMissingError) as err:
        S.load_fsdd()
    msg = str(err.value)
    assert "COURSE_DATA" in msg and str(data_dir) in msg and "0_george_0.wav" in msg


def _fake_fsdd(root: Path, bad: str) -> None:
    folder = root / S.FSDD_DIR
    folder.mkdir(parents=True)
    good = hashlib.md5(b"x").hexdigest()
    lines = []
    for name in S.fsdd_names():
        (folder / name).write_bytes(b"x")
        lines.append(f"{'0' * 32 if name == bad else good}  fsdd/recordings/{name}")
    (root / "speech" / "MD5SUMS").write_text("\n".join(lines) + "\n")


def test_corrupt_fsdd_file_is_named(data_dir, no_network):
    _fake_fsdd(data_dir, bad="3_theo_7.wav")
    with pytest.raises(ChecksumError, match="3_theo_7.wav"):
        S.fsdd_files()


def test_corrupt_fsdd_without_md5sums_names_the_folder_to_delete(data_dir, no_network):
    _fake_fsdd(data_dir, bad="3_theo_7.wav")
    (data_dir / "speech" / "MD5SUMS").unlink()
    with pytest.raises(ChecksumError) as err:
        S.fsdd_files()
    msg = str(err.value)
    assert f"Delete the folder {data_dir / S.FSDD_DIR}" in msg and "COURSE_DOWNLOAD=1" in msg


def _fake_release(monkeypatch) -> list:
    """Serve a fake FSDD tarball (every wav distinct) in place of the network; pin its manifest digest.

    Returns a list that records each download."""
    blob, digests = io.BytesIO(), {}
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        for name in S.fsdd_names():
            data = name.encode()
            digests[name] = hashlib.md5(data).hexdigest()
            info = tarfile.TarInfo(f"free-spoken-digit-dataset-{S.FSDD_COMMIT}/recordings/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    calls = []

    def fetch(url, timeout=None):
        calls.append(url)
        return io.BytesIO(blob.getvalue())

    monkeypatch.setattr(urllib.request, "urlopen", fetch)
    monkeypatch.setattr(S, "FSDD_MANIFEST_MD5", S._manifest_md5(digests))
    return calls


def test_fsdd_truncated_download_is_a_missing_error(data_dir, monkeypatch):
    _fake_release(monkeypatch)
    whole = urllib.request.urlopen(S.FSDD_URL).read()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(whole[: len(whole) // 2]))
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    with pytest.raises(DataMissingError, match="download of .* failed"):   # not a raw tarfile/EOF traceback
        S.fsdd_files()


def test_fsdd_download_records_md5s_so_later_corruption_is_named(data_dir, monkeypatch):
    calls = _fake_release(monkeypatch)
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    (data_dir / "speech").mkdir()
    (data_dir / "speech" / "MD5SUMS").write_text(f"{'1' * 32}  SOURCES.md\n")   # another file's line is kept
    assert len(S.fsdd_files()) == 3000 and len(calls) == 1
    lines = (data_dir / "speech" / "MD5SUMS").read_text().splitlines()
    assert lines[0] == f"{'1' * 32}  SOURCES.md" and len(lines) == 3001
    assert f"{hashlib.md5(b'3_theo_7.wav').hexdigest()}  fsdd/recordings/3_theo_7.wav" in lines
    bad = data_dir / S.FSDD_DIR / "3_theo_7.wav"
    bad.write_bytes(b"corrupt")
    with pytest.raises(ChecksumError, match="3_theo_7.wav") as err:   # all files exist: no new download
        S.fsdd_files()
    assert len(calls) == 1 and "COURSE_DOWNLOAD=1" in str(err.value)
    bad.unlink()                                                       # what the error advises
    assert len(S.fsdd_files()) == 3000 and len(calls) == 2 and bad.read_bytes() == b"3_theo_7.wav"


def test_failed_fsdd_download_writes_no_md5sums(data_dir, monkeypatch):
    _fake_release(monkeypatch)
    monkeypatch.setattr(S, "FSDD_MANIFEST_MD5", "0" * 32)               # the download does not verify
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    with pytest.raises(ChecksumError, match="Delete the folder"):
        S.fsdd_files()
    assert not (data_dir / "speech" / "MD5SUMS").exists()


@pytest.mark.skipif(not (REAL / S.FSDD_DIR).exists(), reason="no FSDD copy under COURSE_DATA on this machine")
def test_real_fsdd_loads(monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(REAL))
    d = S.load_fsdd()
    assert len(d["waves"]) == 3000 and d["sample_rate"] == 8000
    assert sorted(set(d["speaker"])) == sorted(S.FSDD_SPEAKERS)
    assert torch.bincount(d["digit"]).tolist() == [300] * 10
    assert all(w.abs().max() <= 1 and w.ndim == 1 for w in d["waves"])


def test_load_fsdd_rejects_a_recording_at_another_sample_rate(tmp_path, monkeypatch):
    path = tmp_path / "0_george_0.wav"
    S.write_wav(path, torch.zeros(160), 16000)
    monkeypatch.setattr(S, "fsdd_files", lambda: [path])   # the MD5-checked file list, reduced to this one file
    with pytest.raises(ValueError, match=r"0_george_0\.wav: sample rate 16000, expected 8000"):
        S.load_fsdd()


def test_phonemize():
    for word in S.DIGIT_WORDS:
        ids = S.phonemize(word)
        assert [S.PHONES[i] for i in ids] == list(S.LEXICON[word]) and 0 not in ids
    with pytest.raises(ValueError, match="eleven"):
        S.phonemize("eleven")


# ------------------------------------------------------------------ mel filterbank and STFT


def test_mel_scale():
    assert abs(float(S.hz_to_mel(1000.0)) - 1000.0) < 0.1  # the HTK scale is anchored at 1 kHz ~ 1000 mel
    f = torch.tensor([0.0, 100.0, 2500.0, 4000.0])
    assert torch.allclose(S.mel_to_hz(S.hz_to_mel(f)), f.double(), atol=1e-6)


def test_mel_filterbank_matches_the_reference_formula():
    n_mels, n_fft, sr, f_min, f_max = 12, 64, 8000, 100.0, 3800.0
    fb = S.mel_filterbank(n_mels, n_fft, sr, f_min, f_max).numpy()
    # reference: element by element, straight from the textbook definition
    mel = lambda f: 2595 * math.log10(1 + f / 700)
    imel = lambda m: 700 * (10 ** (m / 2595) - 1)
    pts = [imel(mel(f_min) + k * (mel(f_max) - mel(f_min)) / (n_mels + 1)) for k in range(n_mels + 2)]
    ref = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if pts[m] <= f <= pts[m + 1]:
                ref[m, k] = (f - pts[m]) / (pts[m + 1] - pts[m])
            elif pts[m + 1] < f <= pts[m + 2]:
                ref[m, k] = (pts[m + 2] - f) / (pts[m + 2] - pts[m + 1])
    assert np.allclose(fb, ref, atol=1e-6)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.max() <= 1 + 1e-6


def test_mel_filterbank_rejects_bad_band():
    with pytest.raises(ValueError, match="f_max=5000"):
        S.mel_filterbank(40, 256, 8000, 0.0, 5000.0)


def test_mel_filterbank_rejects_filters_that_contain_no_bin():
    # 80 mels over the 33 bins of a 64-point FFT: many low triangles fall between two bins (all-zero rows)
    with pytest.raises(ValueError, match="n_mels=80.*n_fft=64"):
        S.mel_filterbank(80, 64, 8000)
    assert (S.mel_filterbank(40, 256, 8000).amax(1) > 0).all()  # the chapter's setting: every filter sees a bin


def test_stft_magnitude_parity_and_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2000, generator=g)
    n_fft, hop = 256, 80
    mag = S.stft_magnitude(x, n_fft, hop)
    win = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=win, center=True, return_complex=True)
    assert mag.shape == (3, n_fft // 2 + 1, 1 + 2000 // hop)
    assert torch.allclose(mag, spec.abs(), atol=1e-5)
    # direct DFT of one centred frame (reflect padding), independent of torch.stft
    xp = F.pad(x[:1, None], (n_fft // 2, n_fft // 2), mode="reflect")[0, 0]
    frame = xp[5 * hop: 5 * hop + n_fft] * win
    assert torch.allclose(mag[0, :, 5], torch.fft.rfft(frame).abs(), atol=1e-4)
    back = torch.istft(spec, n_fft, hop, window=win, center=True, length=2000)
    assert torch.allclose(back, x, atol=1e-5)


def test_log_mel_is_the_log_of_filtered_magnitudes():
    x = torch.randn(1200, generator=torch.Generator().manual_seed(1))
    fb = S.mel_filterbank(20, 128, 8000)
    lm = S.log_mel(x, fb, 128, 40)
    assert lm.shape == (20, 1 + 1200 // 40)
    assert torch.allclose(lm, torch.log((fb @ S.stft_magnitude(x, 128, 40)).clamp_min(1e-5)), atol=1e-6)
    with pytest.raises(ValueError, match="n_fft=256"):
        S.log_mel(x, fb, 256, 40)


def test_mel_to_linear_reproduces_the_mel():
    fb = S.mel_filterbank(20, 128, 8000)
    s = torch.rand(65, 30, generator=torch.Generator().manual_seed(2))
    mel = fb @ s
    est = S.mel_to_linear(mel, fb, n_iter=200)
    assert (est >= 0).all()
    assert torch.linalg.norm(fb @ est - mel) / torch.linalg.norm(mel) < 0.05


def test_griffin_lim_converges_and_is_deterministic():
    t = torch.arange(4000) / 8000
    x = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 6)) * torch.hann_window(4000)
    n_fft, hop = 256, 64
    mag = S.stft_magnitude(x, n_fft, hop)
    y0 = S.griffin_lim(mag, n_fft, hop, n_iter=0, length=4000, generator=torch.Generator().manual_seed(0))
    y = S.griffin_lim(mag, n_fft, hop, n_iter=40, length=4000, generator=torch.Generator().manual_seed(0))
    y2 = S.griffin_lim(mag, n_fft, hop, n_iter=40, length=4000, generator=torch.Generator().manual_seed(0))
    assert y.shape == (4000,) and torch.equal(y, y2)
    sc0, sc = S.spectral_convergence(mag, y0, n_fft, hop), S.spectral_convergence(mag, y, n_fft, hop)
    assert sc < 0.5 * sc0 and sc < 0.2, (sc0, sc)
    # the "fast" momentum step is what makes 40 rounds enough: plain Griffin-Lim (momentum 0) lags far behind
    plain = S.griffin_lim(mag, n_fft, hop, n_iter=40, momentum=0.0, length=4000,
                          generator=torch.Generator().manual_seed(0))
    sc_plain = S.spectral_convergence(mag, plain, n_fft, hop)
    assert sc < 0.6 * sc_plain, (sc, sc_plain)
    with pytest.raises(ValueError, match="momentum=1.0"):
        S.griffin_lim(mag, n_fft, hop, momentum=1.0)


def test_frame_pitch_finds_a_tone_and_silence():
    sr = 8000
    t = torch.arange(4000) / sr
    tone = 0.5 * torch.sin(2 * math.pi * 160 * t) + 0.2 * torch.sin(2 * math.pi * 320 * t)
    f0 = S.frame_pitch(torch.stack([tone, torch.zeros(4000)]), sr, frame=256, hop=80)
    assert f0.shape == (2, 1 + 4000 // 80)
    assert (f0[0, 3:-3] - 160).abs().max() < 8
    assert (f0[1] == 0).all()


def test_frame_pitch_tone_below_f_min_is_unvoiced():
    # a 50 Hz period (160 samples) is longer than the longest lag searched (f_min = 60 Hz: 134 samples); its
    # correlation still rises at the last lag, so no lag in range is a peak: unvoiced, not a false f_max
    sr = 8000
    t = torch.arange(4000) / sr
    tones = torch.stack([0.5 * torch.sin(2 * math.pi * f * t) for f in (50.0, 55.0, 100.0, 300.0)])
    f0 = S.frame_pitch(tones, sr, frame=256, hop=80)
    assert (f0[:2] == 0).all(), f0[:2].unique()
    assert (f0[2, 3:-3] - 100).abs().max() < 2 and (f0[3, 3:-3] - 300).abs().max() < 8


def test_frame_pitch_threshold_decides_voicing():
    noise = torch.randn(4000, generator=torch.Generator().manual_seed(0))  # no period: weak correlation
    assert (S.frame_pitch(noise, 8000, frame=256, hop=80) == 0).all()  # default threshold 0.45: unvoiced
    assert (S.frame_pitch(noise, 8000, frame=256, hop=80, threshold=0.1) > 0).all()  # a lax one calls it voiced
    with pytest.raises(ValueError, match="threshold=1.5"):
        S.frame_pitch(noise, 8000, frame=256, hop=80, threshold=1.5)


# ------------------------------------------------------------------ SALN and the length regulator


def test_saln_reduces_to_layer_norm_at_unit_gain_zero_bias():
    torch.manual_seed(0)
    saln = S.SALN(16, 8)
    h, w = torch.randn(4, 7, 16), torch.randn(4, 8)
    ref = F.layer_norm(h, (16,))
    assert torch.allclose(saln(h, w), ref, atol=1e-6)  # initialised at gain 1, bias 0 for every w
    ln = torch.nn.LayerNorm(16)
    assert torch.allclose(saln(h, w), ln(h), atol=1e-6)


def test_saln_conditions_each_sample_on_its_own_style():
    torch.manual_seed(1)
    saln = S.SALN(16, 8)
    torch.nn.init.normal_(saln.affine.weight)
    h, w = torch.randn(3, 5, 16), torch.randn(3, 8)
    out = saln(h, w)
    gain, bias = saln.affine(w).chunk(2, -1)
    assert torch.allclose(out, gain[:, None] * F.layer_norm(h, (16,)) + bias[:, None], atol=1e-5)
    for b in range(3):  # sample b only depends on its own (h_b, w_b)
        assert torch.allclose(out[b], saln(h[b:b + 1], w[b:b + 1])[0], atol=1e-5)
    w2 = w.clone()
    w2[1] += 1.0
    out2 = saln(h, w2)
    assert torch.allclose(out2[[0, 2]], out[[0, 2]]) and not torch.allclose(out2[1], out[1])
    with pytest.raises(ValueError):
        saln(h, w[:2])


def test_length_regulator_matches_repeat_interleave():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(4, 5, 6, generator=g)
    d = torch.randint(0, 5, (4, 5), generator=g)
    out, n = S.length_regulate(h, d, max_len=30)
    assert out.shape == (4, 30, 6)
    for b in range(4):
        ref = torch.repeat_interleave(h[b], d[b], dim=0)
        assert n[b] == min(len(ref), 30)
        assert torch.equal(out[b, : n[b]], ref[:30])
        assert (out[b, n[b]:] == 0).all()


def test_length_regulator_cuts_and_passes_gradients():
    h = torch.randn(1, 2, 3, requires_grad=True)
    out, n = S.length_regulate(h, torch.tensor([[4, 4]]), max_len=6)
    assert n.item() == 6 and torch.equal(out[0, 4:], h[0, 1].detach().expand(2, 3))
    out.sum().backward()
    assert torch.equal(h.grad[0, :, 0], torch.tensor([4.0, 2.0]))
    with pytest.raises(ValueError, match="-1"):
        S.length_regulate(h, torch.tensor([[2, -1]]), max_len=6)


def test_length_regulator_rejects_float_durations():
    # a predicted duration 1.7 must be rounded by the caller, not silently truncated to 1
    h = torch.randn(1, 2, 3)
    with pytest.raises(ValueError, match="float32.*1.7"):
        S.length_regulate(h, torch.tensor([[1.7, 1.7]]), max_len=6)
    with pytest.raises(ValueError, match="bool"):
        S.length_regulate(h, torch.tensor([[True, False]]), max_len=6)
    out, n = S.length_regulate(h, torch.tensor([[2, 1]], dtype=torch.int32), max_len=6)  # any integer dtype
    assert n.item() == 3 and torch.equal(out[0, :3], h[0, [0, 0, 1]])


def test_uniform_durations():
    for n, t in ((3, 10), (5, 5), (4, 97)):
        d = S.uniform_durations(n, t)
        assert sum(d) == t and len(d) == n and max(d) - min(d) <= 1
    with pytest.raises(ValueError, match="n_frames=2"):
        S.uniform_durations(3, 2)


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda p: S.write_wav(p / "a.wav", torch.zeros(2, 10), 8000), r"1-D waveform, got shape \(2, 10\)",
                 id="wav-2d"),
    pytest.param(lambda p: S.write_wav(p / "a.wav", torch.zeros(10), 0), r"sample_rate must be >= 1, got 0",
                 id="wav-zero-rate"),
    pytest.param(lambda p: S.mel_filterbank(0, 256, 8000), r"got 0, 256, 8000", id="filterbank-no-mel"),
    pytest.param(lambda p: S.stft_magnitude(torch.zeros(400), 64, 0), r"got hop=0, n_fft=64", id="stft-zero-hop"),
    pytest.param(lambda p: S.log_mel(torch.zeros(400), S.mel_filterbank(8, 64, 8000), 64, 16, floor=0.0),
                 r"floor must be > 0, got 0.0", id="log-mel-zero-floor"),
    pytest.param(lambda p: S.mel_to_linear(torch.ones(10, 4), S.mel_filterbank(20, 128, 8000)),
                 r"mel has 10 bands, fbank has 20", id="mel-to-linear-band-mismatch"),
    pytest.param(lambda p: S.griffin_lim(torch.ones(10, 4), 64, 16), r"mag has 10 frequency bins, n_fft=64 needs 33",
                 id="griffin-lim-bin-mismatch"),
    pytest.param(lambda p: S.frame_pitch(torch.zeros(400), 8000, frame=100, hop=80),
                 r"frame=100 must exceed the longest lag 134", id="pitch-frame-too-short"),
    pytest.param(lambda p: S.SALN(0, 8), r"got 0, 8", id="saln-zero-width"),
    pytest.param(lambda p: S.length_regulate(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.long), 4),
                 r"h \(2, 3\) and durations \(2, 3\) do not fit", id="regulate-2d-h"),
    pytest.param(lambda p: S.length_regulate(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.long), 0),
                 r"max_len must be >= 1, got 0", id="regulate-zero-max-len"),
])
def test_invalid_arguments_raise_value_errors_naming_the_value(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)
