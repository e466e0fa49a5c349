"""``dataset.format=cxi``: convert the CXI train and test files (``ptycho.data.cxi``) into NPZ files of the
contract, so the rest of the run (pre-flight, loading, training, C3) reads them as it reads any
NPZ; the run's evidence gets the conversion report and the stitched object as CXI.

Kept apart from runners/phases/c1.py on purpose: c1 calls :func:`prepare` in its data step and
:func:`write_outputs` after the job; c1.dataset_files (and so C3) calls :func:`converted_paths`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPORT_FILE = "cxi_conversion.json"
OBJECT_FILE = "object.cxi"
CONVERTER_VERSION = 1  # bump when ptycho.data.cxi's output changes, so converted files are remade
PIXEL_MATCH = 1e-6  # relative: train and test object pixels must agree


@dataclass
class CxiInputs:
    """The converted (train, test) NPZ paths and their ConversionReports; ``report_path`` the JSON of both."""

    paths: tuple[Path, Path]
    reports: tuple[object, object]
    report_path: Path

    def text(self) -> str:
        return "\n".join(f"[{context}] {report.text()}" for context, report in zip(("train", "test"), self.reports))

    def as_dict(self) -> dict:
        return {"train": self.reports[0].as_dict(), "test": self.reports[1].as_dict()}

    @property
    def photons_per_frame(self) -> float:
        """The train file's mean photons per frame: the nphotons that keeps the counts' own scale."""
        return self.reports[0].counts_per_frame_mean


def prepare(spec, launch_dir: Path, max_bytes: int | None = None) -> CxiInputs:
    """Convert ``spec.dataset``'s CXI files (test in the train file's object frame) into
    ``<cache_dir>/cxi_<key>_{train,test}.npz`` and ``cxi_<key>_report.json``; ``key`` hashes the
    files' sha1s, the conversion settings and the probe file. Raises ptycho.data.cxi_file.CxiFormatError."""
    from ptycho.data import cxi
    from ptycho.data.cxi_file import DISTANCE_PATH, CxiFormatError
    from ptycho.data.npz import file_sha1, save_npz

    dataset, settings = spec.dataset, spec.dataset.cxi
    files = [launch_dir / dataset.train_data_file, launch_dir / dataset.test_data_file]
    conversion = cxi.CxiConversion(
        N=settings.N, binning=settings.binning, center=None if settings.center is None else tuple(settings.center),
        mask_fill=settings.mask_fill, max_masked_fraction=settings.max_masked_fraction,
        clip_negative=settings.clip_negative, probe_fallback=settings.probe_fallback)
    probe_path = launch_dir / settings.probe_file if settings.probe_file else None
    probe = load_probe(probe_path) if probe_path else None
    train, train_report = cxi.convert_cxi(files[0], conversion, probe=probe, max_bytes=max_bytes)
    test, test_report = cxi.convert_cxi(files[1], conversion, probe=probe, origin_ij=train_report.origin_ij,
                                        max_bytes=max_bytes)
    if abs(test_report.object_pixel_m - train_report.object_pixel_m) > PIXEL_MATCH * train_report.object_pixel_m:
        raise CxiFormatError(str(files[1]), DISTANCE_PATH,
                             f"the train file's object pixel ({train_report.object_pixel_m:.6g} m: wavelength, "
                             "distance and detector pixel alike)", f"{test_report.object_pixel_m:.6g} m")
    key = _key(files, conversion, probe_path, file_sha1)
    cache = launch_dir / dataset.cache_dir
    paths = (cache / f"cxi_{key}_train.npz", cache / f"cxi_{key}_test.npz")
    for path, data in zip(paths, (train, test)):
        save_npz(path, data)
    inputs = CxiInputs(paths, (train_report, test_report), cache / f"cxi_{key}_report.json")
    _write_json(inputs.report_path, inputs.as_dict())
    return inputs


def converted_paths(spec, launch_dir: Path) -> tuple[Path, Path]:
    """(train, test) NPZ paths of the converted CXI files (converted now)."""
    return prepare(spec, launch_dir).paths


def load_probe(path: Path) -> np.ndarray:
    """A probe file: .npy (N, N) complex, or .npz with ``probeGuess`` (never unpickled)."""
    from ptycho.data.cxi_file import CxiFormatError

    try:
        loaded = np.load(path, allow_pickle=False)
        probe = loaded["probeGuess"] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    except (OSError, ValueError, KeyError) as exc:
        raise CxiFormatError(str(path), "probeGuess", "a probe file: .npy complex (N, N) or .npz with probeGuess",
                             f"unreadable ({exc})") from exc
    return np.asarray(probe)


def write_outputs(inputs: CxiInputs, run_dir: Path) -> list[Path]:
    """The conversion report (JSON) and, when the run stitched, the object as CXI, in ``run_dir``."""
    from ptycho.data.cxi_object import export_stitched
    from ptycho.pipeline import RECONSTRUCTION_FILE

    written = [_write_json(run_dir / REPORT_FILE, inputs.as_dict())]
    reconstruction = run_dir / RECONSTRUCTION_FILE
    if reconstruction.is_file():
        with np.load(reconstruction, allow_pickle=False) as arrays:
            if "centre_xy" in arrays:  # stitched (do_stitching): the canvas's object frame is known
                written.append(export_stitched(run_dir / OBJECT_FILE, arrays["canvas"], arrays["covered"],
                                               arrays["centre_xy"], inputs.reports[1]))
    return written


def _key(files, conversion, probe_path, file_sha1) -> str:
    text = json.dumps({"version": CONVERTER_VERSION, "files": [file_sha1(p) for p in files],
                       "conversion": asdict(conversion),
                       "probe": file_sha1(probe_path) if probe_path else None}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
