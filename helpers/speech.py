"""Speech: the Free Spoken Digit Dataset, mel spectrograms, Griffin-Lim, SALN and the length regulator
(chapter 07, StyleSpeech).

Audio is read with Python's :mod:`wave` (16-bit PCM) and transformed with ``torch.stft``/``torch.istft``;
there is no torchaudio or librosa dependency. Everything here is explained in chapter 07:

* :func:`load_fsdd` — the 3,000 FSDD recordings, MD5-checked file by file against one embedded digest of
  the whole manifest ("Data");
* :func:`hz_to_mel`, :func:`mel_filterbank`, :func:`stft_magnitude`, :func:`log_mel` ("Mel spectrograms");
* :func:`mel_to_linear`, :func:`griffin_lim` ("Hearing a mel spectrogram: Griffin-Lim");
* :func:`frame_pitch` — an autocorrelation F0 tracker for the variance adaptor's pitch target;
* :class:`SALN`, :func:`length_regulate`, :func:`uniform_durations` ("SALN", "The variance adaptor").
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tarfile
import urllib.request
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DOWNLOAD_ERRORS, ChecksumError, DataMissingError, data_root, download_allowed, missing_error

# ------------------------------------------------------------------ the Free Spoken Digit Dataset (chapter 07, "Data")

FSDD_DIR = "speech/fsdd/recordings"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_SAMPLE_RATE = 8000
FSDD_PER_DIGIT = 50  # each speaker says each digit 50 times (indices 0-49; upstream's test split is 0-4)
FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.tar.gz"
# MD5 of the manifest "<md5>  <file name>\n" over the 3,000 wavs sorted by name: one constant pins every file.
FSDD_MANIFEST_MD5 = "bdbabe32fa657162edfdcdbd292aecd5"

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# A hand lexicon in ARPAbet (stress marks dropped): the "text" of every FSDD utterance.
LEXICON = {
    "zero": ("Z", "IH", "R", "OW"), "one": ("W", "AH", "N"), "two": ("T", "UW"), "three": ("TH", "R", "IY"),
    "four": ("F", "AO", "R"), "five": ("F", "AY", "V"), "six": ("S", "IH", "K", "S"),
    "seven": ("S", "EH", "V", "AH", "N"), "eight": ("EY", "T"), "nine": ("N", "AY", "N"),
}
PAD = "<pad>"
PHONES = (PAD,) + tuple(sorted({p for word in LEXICON.values() for p in word}))


def fsdd_names() -> list[str]:
    """The 3,000 FSDD file names ``{digit}_{speaker}_{index}.wav``, sorted (chapter 07, "Data")."""
    return sorted(f"{d}_{s}_{i}.wav" for d in range(10) for s in FSDD_SPEAKERS for i in range(FSDD_PER_DIGIT))


def read_wav(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Read a mono 16-bit PCM wav with :mod:`wave`: ``(samples float32 in [-1, 1), sample_rate)`` (chapter 07).

    Raises ``ValueError`` naming the file for other sample widths or channel counts.
    """
    with wave.open(str(path), "rb") as f:
        width, channels, rate, n = f.getsampwidth(), f.getnchannels(), f.getframerate(), f.getnframes()
        raw = f.readframes(n)
    if width != 2 or channels != 1:
        raise ValueError(f"{path}: expected mono 16-bit PCM, got {channels} channel(s) of {8 * width}-bit samples")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return torch.from_numpy(x.copy()), rate


def write_wav(path: str | os.PathLike, x: torch.Tensor, sample_rate: int) -> None:
    """Write a 1-D float waveform (clipped to [-1, 1]) as mono 16-bit PCM (chapter 07)."""
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {tuple(x.shape)}")
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    pcm = (x.detach().float().clamp(-1, 1 - 1 / 32768) * 32768).round().to(torch.int16).cpu().numpy()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.astype("<i2").tobytes())


def _fsdd_missing(path: Path) -> DataMissingError:
    return missing_error(path, FSDD_URL, "Free Spoken Digit Dataset", hint=(
        f"Put the recordings/ folder of {FSDD_URL} at {data_root() / FSDD_DIR}, "
        f"or set COURSE_DOWNLOAD=1 to let the course download it."))


def _download_fsdd(folder: Path) -> None:
    """Download the pinned upstream commit and extract ``recordings/*.wav`` into ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(FSDD_URL, timeout=120) as response:
            blob = response.read()
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:  # a cut connection fails here
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 3 and parts[1] == "recordings" and parts[2].endswith(".wav"):
                    (folder / parts[2]).write_bytes(tar.extractfile(member).read())
    except DOWNLOAD_ERRORS as err:
        raise DataMissingError(f"Free Spoken Digit Dataset: download of {FSDD_URL} failed ({err!r}); "
                               f"COURSE_DATA={os.environ.get('COURSE_DATA', '(unset)')}") from err


def _manifest_md5(digests: dict[str, str]) -> str:
    text = "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))
    return hashlib.md5(text.encode()).hexdigest()


def _md5sums_path() -> Path:
    return data_root() / "speech" / "MD5SUMS"


def _expected_md5s() -> dict[str, str]:
    """Per-file MD5s from ``COURSE_DATA/speech/MD5SUMS`` when present (only used to name a bad file)."""
    path = _md5sums_path()
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        md5, _, rel = line.partition("  ")
        if rel.startswith("fsdd/recordings/"):
            out[rel.rsplit("/", 1)[1]] = md5
    return out


def _write_md5s(digests: dict[str, str]) -> None:
    """Record the per-file MD5s of a verified download in ``COURSE_DATA/speech/MD5SUMS``, in the format
    :func:`_expected_md5s` reads, so that a file changed later is named in the error. Lines for other
    files (e.g. the course's other speech data) are kept."""
    path = _md5sums_path()
    kept = []
    if path.exists():
        kept = [line for line in path.read_text().splitlines()
                if line and not line.partition("  ")[2].startswith("fsdd/recordings/")]
    lines = kept + [f"{digests[name]}  fsdd/recordings/{name}" for name in sorted(digests)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def fsdd_files() -> list[Path]:
    """The 3,000 FSDD wav paths under ``COURSE_DATA/speech/fsdd/recordings``, each MD5-checked (chapter 07, "Data").

    Raises :class:`~helpers.data.DataMissingError` naming the first missing file and ``COURSE_DATA``
    (after a download attempt when ``COURSE_DOWNLOAD=1``), or :class:`~helpers.data.ChecksumError` when
    the manifest's MD5 differs from :data:`FSDD_MANIFEST_MD5`. That error names the changed files when
    ``COURSE_DATA/speech/MD5SUMS`` lists them (a verified download writes it), and otherwise the folder
    to delete so that ``COURSE_DOWNLOAD=1`` downloads it again.
    """
    folder = data_root() / FSDD_DIR
    names = fsdd_names()
    downloaded = False
    if not all((folder / n).exists() for n in names) and download_allowed():
        _download_fsdd(folder)
        downloaded = True
    digests = {}
    for name in names:
        path = folder / name
        if not path.exists():
            raise _fsdd_missing(path)
        digests[name] = hashlib.md5(path.read_bytes()).hexdigest()
    if _manifest_md5(digests) != FSDD_MANIFEST_MD5:
        expected = _expected_md5s()
        bad = [n for n in names if expected.get(n) not in (None, digests[n])]
        where = f"COURSE_DATA={os.environ.get('COURSE_DATA', '(unset)')}"
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ChecksumError(
                f"Free Spoken Digit Dataset: {', '.join(str(folder / n) for n in bad[:5])}{more} "
                f"{'has' if len(bad) == 1 else 'have'} the wrong MD5 ({where}). Delete the bad file(s) and run "
                f"again with COURSE_DOWNLOAD=1 to download the recordings again, or copy good ones there.")
        raise ChecksumError(
            f"Free Spoken Digit Dataset: some file under {folder} has the wrong MD5 ({where}); the per-file "
            f"list {_md5sums_path()} is missing or does not say which. Delete the folder {folder} "
            f"and run again with COURSE_DOWNLOAD=1 to download it again, or put the recordings/ folder of "
            f"{FSDD_URL} there.")
    if downloaded:
        _write_md5s(digests)  # verified against the constant: later corruption will be named file by file
    return [folder / n for n in names]


def load_fsdd() -> dict:
    """The Free Spoken Digit Dataset (chapter 07): 3,000 utterances of the digits 0-9 by 6 speakers.

    Returns a dict with ``waves`` (list of 1-D float32 tensors at 8 kHz), ``digit`` and ``index``
    (int64 tensors ``(N,)``), ``speaker`` (list of names) and ``sample_rate``. Every file is MD5-checked.
    """
    waves, digit, speaker, index = [], [], [], []
    for path in fsdd_files():
        x, rate = read_wav(path)
        if rate != FSDD_SAMPLE_RATE:
            raise ValueError(f"{path}: sample rate {rate}, expected {FSDD_SAMPLE_RATE}")
        d, s, i = path.stem.split("_")
        waves.append(x)
        digit.append(int(d))
        speaker.append(s)
        index.append(int(i))
    return {"waves": waves, "digit": torch.tensor(digit), "speaker": speaker, "index": torch.tensor(index),
            "sample_rate": FSDD_SAMPLE_RATE}


def phonemize(word: str) -> list[int]:
    """Phone ids (indices into :data:`PHONES`) of a digit word from the hand lexicon ("zero" ... "nine").

    Chapter 07, "Data".
    """
    if word not in LEXICON:
        raise ValueError(f"{word!r} is not in the lexicon; known words: {', '.join(DIGIT_WORDS)}")
    return [PHONES.index(p) for p in LEXICON[word]]


# ------------------------------------------------------------------ mel spectrograms (chapter 07, "Mel spectrograms")


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """The HTK mel scale ``m = 2595 log10(1 + f / 700)`` (chapter 07, "The mel scale and the filterbank")."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`: ``f = 700 (10^(m / 2595) - 1)`` (chapter 07)."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters ``(n_mels, n_fft // 2 + 1)`` on the HTK mel scale, peak 1 (chapter 07, Eq. mel).

    Filter ``m`` rises linearly from mel point ``m`` to ``m + 1`` and falls to ``m + 2``, where the
    ``n_mels + 2`` points are equally spaced in mel between ``f_min`` and ``f_max`` (default Nyquist).
    Raises ``ValueError`` when a filter would contain no FFT bin (too many mels for ``n_fft``).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_mels < 1 or n_fft < 2 or sample_rate < 1:
        raise ValueError(f"need n_mels >= 1, n_fft >= 2, sample_rate >= 1; got {n_mels}, {n_fft}, {sample_rate}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2; got f_min={f_min}, f_max={f_max}")
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    pts = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                   dtype=torch.float64))  # (M+2,)
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]  # (M, 1) each
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)  # (M, F)
    empty = (fb.amax(1) == 0).nonzero().flatten()
    if len(empty):  # too many mels for the FFT's bin spacing: some triangles fall between two bins
        raise ValueError(f"n_mels={n_mels} is too many for n_fft={n_fft} at sample_rate={sample_rate} "
                         f"(bins {sample_rate / n_fft:g} Hz apart): {len(empty)} filters, e.g. mel {int(empty[0])}, "
                         f"contain no FFT bin; use fewer mels or a larger n_fft")
    return fb.float()


def _window(win_length: int, device) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True, device=device)


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, win_length: int | None = None) -> torch.Tensor:
    """``|STFT(x)|`` with a periodic Hann window and centred frames: ``(..., n_fft // 2 + 1, 1 + L // hop)``.

    Chapter 07, "The short-time Fourier transform".
    """
    if hop < 1 or n_fft < 2:
        raise ValueError(f"need hop >= 1 and n_fft >= 2, got hop={hop}, n_fft={n_fft}")
    win_length = n_fft if win_length is None else win_length
    shape = x.shape
    spec = torch.stft(x.reshape(-1, shape[-1]), n_fft, hop, win_length, _window(win_length, x.device),
                      center=True, return_complex=True)
    return spec.abs().reshape(*shape[:-1], *spec.shape[-2:])


def log_mel(x: torch.Tensor, fbank: torch.Tensor, n_fft: int, hop: int, floor: float = 1e-5) -> torch.Tensor:
    """Log-mel spectrogram ``log(max(M |STFT(x)|, floor))``: ``(..., n_mels, frames)`` (chapter 07, Eq. logmel)."""
    if floor <= 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    if fbank.shape[-1] != n_fft // 2 + 1:
        raise ValueError(f"fbank has {fbank.shape[-1]} frequency bins, n_fft={n_fft} gives {n_fft // 2 + 1}")
    mag = stft_magnitude(x, n_fft, hop)  # (..., F, T)
    return torch.log(torch.clamp(fbank.to(mag) @ mag, min=floor))


def mel_to_linear(mel_mag: torch.Tensor, fbank: torch.Tensor, n_iter: int = 50) -> torch.Tensor:
    """Non-negative least squares ``min_S>=0 ||M S - mel||^2`` by projected gradient, started at ``M^+ mel``
    (chapter 07, "Hearing a mel spectrogram: Griffin-Lim").

    ``mel_mag``: ``(..., n_mels, T)`` *magnitudes* (not logs); returns ``(..., n_freq, T)``.
    """
    if mel_mag.shape[-2] != fbank.shape[0]:
        raise ValueError(f"mel has {mel_mag.shape[-2]} bands, fbank has {fbank.shape[0]}")
    fb = fbank.to(mel_mag)
    s = torch.clamp(torch.linalg.pinv(fb) @ mel_mag, min=0.0)
    step = 1.0 / float(torch.linalg.matrix_norm(fb, ord=2) ** 2)
    for _ in range(n_iter):
        s = torch.clamp(s - step * (fb.T @ (fb @ s - mel_mag)), min=0.0)
    return s


def griffin_lim(mag: torch.Tensor, n_fft: int, hop: int, n_iter: int = 32, momentum: float = 0.99,
                length: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Griffin-Lim phase reconstruction with the "fast" momentum step (chapter 07, Eq. gl).

    ``mag``: ``(..., n_fft // 2 + 1, T)``. Alternates the two projections — onto spectrograms with the
    given magnitude, and onto consistent spectrograms (``STFT(ISTFT(.))``) — for ``n_iter`` rounds,
    starting from random phases. Returns the waveform ``(..., samples)``.
    """
    if n_iter < 0 or not 0.0 <= momentum < 1.0:
        raise ValueError(f"need n_iter >= 0 and 0 <= momentum < 1, got n_iter={n_iter}, momentum={momentum}")
    if mag.shape[-2] != n_fft // 2 + 1:
        raise ValueError(f"mag has {mag.shape[-2]} frequency bins, n_fft={n_fft} needs {n_fft // 2 + 1}")
    shape = mag.shape
    mag = mag.reshape(-1, *shape[-2:])
    win = _window(n_fft, mag.device)
    phase = torch.rand(mag.shape, generator=generator, device=generator.device if generator else mag.device)
    spec = mag * torch.exp(2j * math.pi * phase.to(mag.device))
    prev = torch.zeros_like(spec)
    for _ in range(n_iter):
        x = torch.istft(spec, n_fft, hop, n_fft, win, center=True, length=length)
        rebuilt = torch.stft(x, n_fft, hop, n_fft, win, center=True, return_complex=True)
        accel = rebuilt + momentum * (rebuilt - prev)
        prev = rebuilt
        spec = mag * torch.exp(1j * torch.angle(accel))
    x = torch.istft(spec, n_fft, hop, n_fft, win, center=True, length=length)
    return x.reshape(*shape[:-2], x.shape[-1])


def spectral_convergence(mag: torch.Tensor, x: torch.Tensor, n_fft: int, hop: int) -> float:
    """``|| |STFT(x)| - mag ||_F / || mag ||_F``: how consistent a waveform is with a target magnitude (chapter 07)."""
    got = stft_magnitude(x, n_fft, hop)[..., : mag.shape[-1]]
    return float(torch.linalg.norm(got - mag) / torch.linalg.norm(mag))


def frame_pitch(x: torch.Tensor, sample_rate: int, frame: int, hop: int, f_min: float = 60.0,
                f_max: float = 400.0, threshold: float = 0.45) -> torch.Tensor:
    """F0 per frame (Hz; 0 = unvoiced) from the normalised autocorrelation peak (chapter 07, "Pitch").

    Frames are centred like :func:`stft_magnitude` (``1 + L // hop`` of them). A frame is voiced when its
    best normalised autocorrelation at a lag in ``[sr / f_max, sr / f_min]`` exceeds ``threshold`` and some
    lag in that range is a local peak (a tone below ``f_min`` has none: unvoiced).
    """
    lag_lo, lag_hi = int(sample_rate // f_max), int(math.ceil(sample_rate / f_min))
    if not 2 <= lag_lo < lag_hi < frame - 1:
        raise ValueError(f"frame={frame} must exceed the longest lag {lag_hi} (f_min={f_min}, sr={sample_rate})")
    if hop < 1 or not 0 < threshold < 1:
        raise ValueError(f"need hop >= 1 and 0 < threshold < 1, got hop={hop}, threshold={threshold}")
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    xp = F.pad(x[:, None], (frame // 2, frame // 2), mode="reflect")[:, 0]
    frames = xp.unfold(-1, frame, hop)  # (B, T, frame)
    frames = frames - frames.mean(-1, keepdim=True)
    n_fft = frame + lag_hi + 2  # long enough that lags <= lag_hi + 1 do not wrap around
    spec = torch.fft.rfft(frames, n=n_fft)
    lo, hi = lag_lo - 1, lag_hi + 2  # one extra lag each side to test for local maxima
    ac = torch.fft.irfft(spec.real ** 2 + spec.imag ** 2, n=n_fft)[..., lo:hi]  # (B, T, lags)
    # normalise lag k by the energies of the two overlapping parts, x[0:frame-k] and x[k:frame],
    # so that a periodic frame scores ~1 at its period
    energy = (frames ** 2).cumsum(-1)  # energy[j] = sum x[0..j]
    total = energy[..., -1:]
    k = torch.arange(lo, hi, device=x.device)
    head = energy[..., frame - 1 - k]  # sum x[0 .. frame-1-k]
    tail = total - torch.cat([torch.zeros_like(total), energy], -1)[..., k]  # sum x[k .. frame-1]
    win = ac / torch.sqrt(head * tail).clamp_min(1e-8)
    mid = win[..., 1:-1]
    best = mid.max(-1).values
    # the *shortest* lag that is a local peak within 15% of the best one (avoids octave-too-low errors)
    ok = (mid >= win[..., :-2]) & (mid >= win[..., 2:]) & (mid >= 0.85 * best[..., None])
    lag = ok.float().argmax(-1)
    f0 = sample_rate / (lag + lag_lo).float()
    # no local peak in range (e.g. a tone below f_min, whose correlation still rises at lag_hi): argmax would
    # return index 0, the shortest lag, so such a frame is unvoiced, not a false f_max
    f0 = torch.where(ok.any(-1) & (best > threshold), f0, torch.zeros_like(f0))
    return f0.reshape(*shape[:-1], f0.shape[-1])


# ------------------------------------------------------------------ SALN and the length regulator (chapter 07)


class SALN(nn.Module):
    """Style-Adaptive Layer Norm (chapter 07, Eq. saln): ``g(w) * (h - mu) / sigma + b(w)``.

    One affine layer maps the style vector ``w`` ``(B, d_style)`` to a gain and a bias ``(B, d_model)``
    each; they are initialised to gain 1 and bias 0, so an untrained SALN is a plain LayerNorm.
    ``forward(h, w)``: ``h`` is ``(B, T, d_model)``.
    """

    def __init__(self, d_model: int, d_style: int, eps: float = 1e-5):
        super().__init__()
        if d_model < 1 or d_style < 1:
            raise ValueError(f"d_model and d_style must be >= 1, got {d_model}, {d_style}")
        self.d_model, self.eps = d_model, eps
        self.affine = nn.Linear(d_style, 2 * d_model)
        nn.init.zeros_(self.affine.weight)
        with torch.no_grad():
            self.affine.bias.copy_(torch.cat([torch.ones(d_model), torch.zeros(d_model)]))

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] != self.d_model or w.ndim != 2 or w.shape[0] != h.shape[0]:
            raise ValueError(f"SALN({self.d_model}) got h {tuple(h.shape)} and w {tuple(w.shape)}")
        gain, bias = self.affine(w).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, C) each
        return gain * F.layer_norm(h, (self.d_model,), eps=self.eps) + bias


def length_regulate(h: torch.Tensor, durations: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat phoneme ``n`` of ``h`` ``durations[b, n]`` times (chapter 07, Eq. lr), padded to ``max_len`` frames.

    ``h``: ``(B, N, C)``, ``durations``: non-negative ints ``(B, N)`` (an integer dtype: round predicted
    durations first; floats raise). Returns ``(B, max_len, C)`` (zeros after the last frame; sequences longer
    than ``max_len`` are cut) and the frame counts ``(B,)``. Static shapes: frame ``t`` takes phoneme
    ``#{n : cumsum(d)_n <= t}``, found with ``searchsorted``.
    """
    if h.ndim != 3 or durations.shape != h.shape[:2]:
        raise ValueError(f"h {tuple(h.shape)} and durations {tuple(durations.shape)} do not fit (B, N, C)/(B, N)")
    if durations.is_floating_point() or durations.is_complex() or durations.dtype == torch.bool:
        raise ValueError(f"durations must be an integer tensor (round them first), got dtype {durations.dtype}: "
                         f"{durations.flatten()[:6].tolist()}")
    if durations.device.type == "cpu" and (durations < 0).any():  # no host sync per step on a GPU
        raise ValueError(f"durations must be >= 0, got {durations.tolist()}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    ends = durations.long().cumsum(-1)  # (B, N)
    t = torch.arange(max_len, device=h.device).expand(h.shape[0], max_len).contiguous()  # (B, T)
    idx = torch.searchsorted(ends, t, right=True)  # (B, T): phoneme index of each frame
    valid = t < ends[:, -1:]
    idx = idx.clamp(max=h.shape[1] - 1)
    out = torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1])) * valid[..., None]
    return out, ends[:, -1].clamp(max=max_len)


def uniform_durations(n_phones: int, n_frames: int) -> list[int]:
    """Split ``n_frames`` over ``n_phones`` as evenly as possible (chapter 07's stand-in for an aligner)."""
    if n_phones < 1 or n_frames < n_phones:
        raise ValueError(f"need 1 <= n_phones <= n_frames, got n_phones={n_phones}, n_frames={n_frames}")
    edges = [round(k * n_frames / n_phones) for k in range(n_phones + 1)]
    return [b - a for a, b in zip(edges, edges[1:])]
